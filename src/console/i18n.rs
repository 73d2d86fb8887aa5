//! The console's labels in English and French, and the few formats that differ between them
//! (money, durations, dates).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Fr,
}

impl Lang {
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "en" => Some(Self::En),
            "fr" => Some(Self::Fr),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Fr => "fr",
        }
    }

    /// Every label in this language, for the templates (`{{ t.approve }}`).
    pub fn labels(self) -> &'static BTreeMap<&'static str, &'static str> {
        static EN: OnceLock<BTreeMap<&str, &str>> = OnceLock::new();
        static FR: OnceLock<BTreeMap<&str, &str>> = OnceLock::new();
        match self {
            Self::En => EN.get_or_init(|| LABELS.iter().map(|(key, en, _)| (*key, *en)).collect()),
            Self::Fr => FR.get_or_init(|| LABELS.iter().map(|(key, _, fr)| (*key, *fr)).collect()),
        }
    }

    /// `$1,234.50` / `1 234,50 $`.
    pub fn money(self, cents: i64) -> String {
        let sign = if cents < 0 { "-" } else { "" };
        let (dollars, rest) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
        let digits = dollars.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(if self == Self::Fr { '\u{a0}' } else { ',' });
            }
            grouped.push(c);
        }
        match self {
            Self::En => format!("{sign}${grouped}.{rest:02}"),
            Self::Fr => format!("{sign}{grouped},{rest:02}\u{a0}$"),
        }
    }

    /// How long something has waited: `3 d 4 h`, `2 h 5 min`, `12 min`.
    pub fn waited(self, minutes: i64) -> String {
        let minutes = minutes.max(0);
        let (days, hours, mins) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
        let day = if self == Self::Fr { "j" } else { "d" };
        if days > 0 {
            format!("{days} {day} {hours} h")
        } else if hours > 0 {
            format!("{hours} h {mins} min")
        } else {
            format!("{mins} min")
        }
    }

    /// `Monday 30 November 2026` / `lundi 30 novembre 2026`.
    pub fn long_date(self, date: NaiveDate) -> String {
        let weekday = self.weekday(date.weekday().num_days_from_monday() as usize);
        let month = crate::time::month_name(date.month0() as usize, self == Self::Fr);
        format!("{weekday} {} {month} {}", date.day(), date.year())
    }

    /// Monday is 0.
    pub fn weekday(self, index: usize) -> &'static str {
        crate::time::weekday_name(index, self == Self::Fr)
    }
}

/// (key, English, French).
const LABELS: &[(&str, &str, &str)] = &[
    ("console", "Cedar console", "Console Cedar"),
    ("skip", "Skip to content", "Aller au contenu"),
    ("morning", "Morning", "Matin"),
    ("inbox", "Waiting for you", "En attente de vous"),
    ("inbox_empty", "Nothing is waiting for a decision.", "Rien n'attend de décision."),
    ("waited", "waiting", "en attente depuis"),
    ("open_review", "Open", "Ouvrir"),
    ("today", "Today", "Aujourd'hui"),
    ("previous_day", "Previous day", "Jour précédent"),
    ("next_day", "Next day", "Jour suivant"),
    ("by_room", "By room", "Par salle"),
    ("by_teacher", "By teacher", "Par professeur"),
    ("no_room", "No room", "Sans salle"),
    ("no_lessons", "No lessons this day.", "Aucun cours ce jour-là."),
    ("attendance_to_take", "Attendance to take", "Présences à prendre"),
    ("attendance_done", "All attendance is taken.", "Toutes les présences sont prises."),
    ("absences", "Absences and cancellations", "Absences et annulations"),
    ("no_absences", "No absences.", "Aucune absence."),
    ("closures", "Closures and time off", "Fermetures et congés"),
    ("no_closures", "The school is open.", "L'école est ouverte."),
    ("present", "Present", "Présent"),
    ("absent", "Absent", "Absent"),
    ("cancelled_by_student", "Cancelled by the family", "Annulé par la famille"),
    ("cancelled_by_teacher", "Cancelled by the teacher", "Annulé par le professeur"),
    ("cancelled", "Cancelled", "Annulé"),
    ("makeup", "makeup", "reprise"),
    ("substitute", "substitute", "remplaçant"),
    ("time", "Time", "Heure"),
    ("teacher", "Teacher", "Professeur"),
    ("student", "Student", "Élève"),
    ("room", "Room", "Salle"),
    ("attendance", "Attendance", "Présence"),
    ("tasks", "Tasks", "Tâches"),
    ("no_tasks", "No open tasks.", "Aucune tâche ouverte."),
    ("due", "due", "échéance"),
    ("overdue", "Overdue", "En retard"),
    ("due_today", "Due today", "Pour aujourd'hui"),
    ("no_due_date", "No due date", "Sans échéance"),
    ("mark_done", "Done", "Terminé"),
    ("money", "Money", "Argent"),
    ("open_invoices", "Open invoices", "Factures ouvertes"),
    ("overdue_invoices", "Overdue invoices", "Factures en retard"),
    ("outstanding", "outstanding", "à percevoir"),
    ("invoice", "Invoice", "Facture"),
    ("family", "Family", "Famille"),
    ("balance", "Balance", "Solde"),
    ("due_date", "Due", "Échéance"),
    ("no_overdue", "No overdue invoices.", "Aucune facture en retard."),
    ("failed_payments", "Failed payments this month", "Paiements refusés ce mois-ci"),
    ("no_failed_payments", "No failed payments this month.", "Aucun paiement refusé ce mois-ci."),
    ("billing_run", "This month's billing run", "Facturation du mois"),
    ("no_billing_run", "Not run yet this month.", "Pas encore lancée ce mois-ci."),
    ("invoices_issued", "invoices issued", "factures émises"),
    ("health", "Health", "État du système"),
    ("dead_jobs", "Jobs that gave up", "Tâches de fond abandonnées"),
    ("dead_emails", "Emails that could not be sent", "Courriels non envoyés"),
    ("no_dead_jobs", "No failed jobs.", "Aucune tâche abandonnée."),
    ("no_dead_emails", "Every email went out.", "Tous les courriels sont partis."),
    ("retry", "Retry", "Réessayer"),
    ("ai_spend", "AI spend this month", "Dépenses d'IA ce mois-ci"),
    ("of_budget", "of the monthly budget", "du budget mensuel"),
    ("no_budget", "no monthly budget set", "aucun budget mensuel"),
    ("sign_in", "Sign in", "Se connecter"),
    ("sign_out", "Sign out", "Se déconnecter"),
    ("email", "Email", "Courriel"),
    ("password", "Password", "Mot de passe"),
    (
        "sign_in_failed",
        "That email and password do not match an account.",
        "Ce courriel et ce mot de passe ne correspondent à aucun compte.",
    ),
    ("staff_only", "The console is for the school's staff.", "La console est réservée au personnel de l'école."),
    ("language", "Language", "Langue"),
    ("switch_language", "Français", "English"),
    ("back", "Back", "Retour"),
    ("approve", "Approve", "Approuver"),
    ("reject", "Reject", "Refuser"),
    ("reason", "Reason", "Motif"),
    (
        "reject_reason_help",
        "Required: what the family or the log should say.",
        "Obligatoire : ce que la famille ou le journal doit indiquer.",
    ),
    ("decision", "Decision", "Décision"),
    ("enroll", "Enrol", "Inscrire"),
    ("waitlist", "Waitlist", "Liste d'attente"),
    ("options", "Options", "Options"),
    ("option", "Option", "Option"),
    ("preferred", "preferred time", "heure souhaitée"),
    ("minutes_off", "min from the preferred time", "min de l'heure souhaitée"),
    ("students_taught", "students", "élèves"),
    ("welcome", "Welcome paragraph", "Paragraphe de bienvenue"),
    ("checks", "Checks", "Vérifications"),
    ("reasons", "Why this order", "Pourquoi cet ordre"),
    ("request", "Request", "Demande"),
    ("instrument", "Instrument", "Instrument"),
    ("experience", "Experience", "Expérience"),
    ("notes", "Notes", "Notes"),
    ("lesson_minutes", "Lesson length", "Durée du cours"),
    ("week_grid", "Options on the week", "Options sur la semaine"),
    ("drafted_by", "Drafted by", "Rédigé par"),
    ("fallback", "AI unavailable, drafted by rules", "IA indisponible, rédigé par règles"),
    ("payment_history", "Payment history", "Historique des paiements"),
    ("failed_attempts", "Failed attempts", "Tentatives refusées"),
    ("reply", "Reply to the family", "Réponse à la famille"),
    ("category", "Category", "Catégorie"),
    ("amount", "Amount", "Montant"),
    ("when", "When", "Quand"),
    ("method", "Method", "Moyen"),
    ("moves", "Proposed moves", "Changements proposés"),
    ("before", "Before", "Avant"),
    ("after", "After", "Après"),
    ("apply_move", "Apply", "Appliquer"),
    ("summary", "Summary", "Résumé"),
    ("body", "Report", "Bulletin"),
    ("metrics", "Attendance and practice", "Présences et pratique"),
    ("progress_notes", "Teacher's notes", "Notes du professeur"),
    ("attention", "Needs attention", "À surveiller"),
    ("proposal", "Proposal (JSON)", "Proposition (JSON)"),
    ("advanced", "Advanced: the whole proposal", "Avancé : toute la proposition"),
    ("advanced_help", "Changes here replace the fields above.", "Une modification ici remplace les champs ci-dessus."),
    ("context", "Context", "Contexte"),
    ("kind_enrollment", "Enrolment", "Inscription"),
    ("kind_invoice", "Payment issue", "Problème de paiement"),
    ("kind_schedule_review", "Schedule review", "Révision de l'horaire"),
    ("kind_progress_report", "Progress report", "Bulletin de progrès"),
    ("kind_student", "Practice plan", "Plan de pratique"),
    ("error", "Something went wrong", "Un problème est survenu"),
    ("not_found", "Not found", "Introuvable"),
    (
        "csrf_failed",
        "This form expired; reload the page and try again.",
        "Ce formulaire a expiré ; rechargez la page et réessayez.",
    ),
    ("done_approved", "Approved.", "Approuvé."),
    ("done_rejected", "Rejected.", "Refusé."),
    ("done_task", "Task done.", "Tâche terminée."),
    ("done_retry", "Queued again.", "Remis en file d'attente."),
    ("done_attendance", "Attendance saved.", "Présence enregistrée."),
    ("already_decided", "This review was already decided.", "Cette révision a déjà été tranchée."),
    ("status", "Status", "Statut"),
    ("error_detail", "Last error", "Dernière erreur"),
    ("attempts", "attempts", "tentatives"),
    ("to", "To", "À"),
    ("subject", "Subject", "Objet"),
    ("kind", "Kind", "Type"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_both_languages() {
        assert_eq!(Lang::En.money(123_450), "$1,234.50");
        assert_eq!(Lang::Fr.money(123_450), "1\u{a0}234,50\u{a0}$");
        assert_eq!(Lang::En.money(-5), "-$0.05");
    }

    #[test]
    fn every_label_has_both_languages() {
        for (key, en, fr) in LABELS {
            assert!(!en.is_empty() && !fr.is_empty(), "{key}");
        }
        assert_eq!(Lang::Fr.labels()["approve"], "Approuver");
        assert_eq!(Lang::En.labels().len(), LABELS.len(), "keys are unique");
    }

    #[test]
    fn waited_reads_naturally() {
        assert_eq!(Lang::En.waited(12), "12 min");
        assert_eq!(Lang::En.waited(125), "2 h 5 min");
        assert_eq!(Lang::Fr.waited(3 * 1440 + 60), "3 j 1 h");
    }
}
