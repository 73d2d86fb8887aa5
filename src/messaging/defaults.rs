//! The templates built into the binary, in English and French, with the sample data an
//! override must render with. `{{ school }}` and `{{ name }}` (the recipient) are always set.

use serde_json::{Value, json};

pub struct Default {
    pub name: &'static str,
    /// `transactional` (always sent) or `notification` (the recipient may opt out).
    pub category: &'static str,
    pub en: (&'static str, &'static str),
    pub fr: (&'static str, &'static str),
    pub sample: fn() -> Value,
}

pub const TEMPLATES: &[Default] = &[
    Default {
        name: "invite",
        category: "transactional",
        en: (
            "Your {{ school }} account",
            "Hello {{ name }},\n\n{{ school }} has created an account for you. Choose your password here (the link works for {{ valid_hours }} hours):\n{{ link }}\n",
        ),
        fr: (
            "Votre compte {{ school }}",
            "Bonjour {{ name }},\n\n{{ school }} vous a créé un compte. Choisissez votre mot de passe ici (lien valable {{ valid_hours }} heures) :\n{{ link }}\n",
        ),
        sample: || json!({"link": "https://cedar.example/auth/v1/verify?type=invite&token=abc", "valid_hours": 72}),
    },
    Default {
        name: "confirm_signup",
        category: "transactional",
        en: (
            "Confirm your email address for {{ school }}",
            "Hello {{ name }},\n\nPlease confirm that this address is yours by opening this link (it works for {{ valid_days }} days):\n{{ link }}\n\nIf you did not create an account, ignore this email: nothing will be linked to this address.\n",
        ),
        fr: (
            "Confirmez votre adresse courriel pour {{ school }}",
            "Bonjour {{ name }},\n\nVeuillez confirmer que cette adresse est la vôtre en ouvrant ce lien (valable {{ valid_days }} jours) :\n{{ link }}\n\nSi vous n'avez pas créé de compte, ignorez ce courriel : rien ne sera lié à cette adresse.\n",
        ),
        sample: || json!({"link": "https://cedar.example/auth/v1/verify?type=signup&token=abc", "valid_days": 7}),
    },
    Default {
        name: "password_reset",
        category: "transactional",
        en: (
            "Reset your {{ school }} password",
            "Hello {{ name }},\n\nSomeone asked to reset your password. If it was you, use this link within {{ valid_hours }} hours:\n{{ link }}\n\nIf not, ignore this email.\n",
        ),
        fr: (
            "Réinitialisez votre mot de passe {{ school }}",
            "Bonjour {{ name }},\n\nUne réinitialisation de votre mot de passe a été demandée. Si c'était vous, utilisez ce lien d'ici {{ valid_hours }} heures :\n{{ link }}\n\nSinon, ignorez ce courriel.\n",
        ),
        sample: || json!({"link": "https://cedar.example/auth/v1/verify?type=recovery&token=abc", "valid_hours": 2}),
    },
    Default {
        name: "enrollment_received",
        category: "transactional",
        en: (
            "We received {{ student }}'s enrollment request",
            "Hello {{ name }},\n\nThank you! We received the request for {{ instrument }} lessons for {{ student }} and will reply soon.\n",
        ),
        fr: (
            "Nous avons reçu la demande d'inscription de {{ student }}",
            "Bonjour {{ name }},\n\nMerci ! Nous avons bien reçu la demande de cours de {{ instrument }} pour {{ student }} et vous répondrons bientôt.\n",
        ),
        sample: || json!({"student": "Hélène", "instrument": "piano"}),
    },
    Default {
        name: "enrollment_approved",
        category: "transactional",
        en: (
            "{{ student }} is enrolled",
            "Hello {{ name }},\n\nGood news: {{ student }} is enrolled in {{ instrument }} lessons.{% if note %}\n\n{{ note }}{% endif %}\n",
        ),
        fr: (
            "{{ student }} est inscrit(e)",
            "Bonjour {{ name }},\n\nBonne nouvelle : {{ student }} est inscrit(e) aux cours de {{ instrument }}.{% if note %}\n\n{{ note }}{% endif %}\n",
        ),
        sample: || json!({"student": "Hélène", "instrument": "piano", "note": "Lessons start Tuesday."}),
    },
    Default {
        name: "enrollment_declined",
        category: "transactional",
        en: (
            "About {{ student }}'s enrollment request",
            "Hello {{ name }},\n\nWe are sorry: we cannot offer {{ instrument }} lessons for {{ student }} at this time.{% if note %}\n\n{{ note }}{% endif %}\n",
        ),
        fr: (
            "Au sujet de la demande d'inscription de {{ student }}",
            "Bonjour {{ name }},\n\nNous sommes désolés : nous ne pouvons pas offrir de cours de {{ instrument }} à {{ student }} pour le moment.{% if note %}\n\n{{ note }}{% endif %}\n",
        ),
        sample: || json!({"student": "Hélène", "instrument": "piano", "note": null}),
    },
    Default {
        name: "enrollment_waitlisted",
        category: "transactional",
        en: (
            "{{ student }} is on our waiting list",
            "Hello {{ name }},\n\n{{ student }} is on the waiting list for {{ instrument }} lessons. We will write as soon as a place opens.\n",
        ),
        fr: (
            "{{ student }} est sur notre liste d'attente",
            "Bonjour {{ name }},\n\n{{ student }} est sur la liste d'attente pour les cours de {{ instrument }}. Nous vous écrirons dès qu'une place se libère.\n",
        ),
        sample: || json!({"student": "Hélène", "instrument": "piano"}),
    },
    Default {
        name: "welcome",
        category: "transactional",
        en: (
            "Welcome to {{ school }}",
            "Hello {{ name }},\n\nWelcome! {{ student }}'s {{ instrument }} lessons with {{ teacher }} start {{ first_lesson }}.{% if personal %}\n\n{{ personal }}{% endif %}\n",
        ),
        fr: (
            "Bienvenue à {{ school }}",
            "Bonjour {{ name }},\n\nBienvenue ! Les cours de {{ instrument }} de {{ student }} avec {{ teacher }} commencent {{ first_lesson }}.{% if personal %}\n\n{{ personal }}{% endif %}\n",
        ),
        sample: || json!({"student": "Hélène", "instrument": "piano", "teacher": "Élodie Gagné", "first_lesson": "Tuesday 8 September at 16:00", "personal": null}),
    },
    Default {
        name: "lesson_reminder",
        category: "notification",
        en: (
            "Reminder: {{ student }}'s lesson {{ when }}",
            "Hello {{ name }},\n\nA reminder: {{ student }} has a lesson with {{ teacher }} {{ when }}{% if room %} in {{ room }}{% endif %}.\n",
        ),
        fr: (
            "Rappel : cours de {{ student }} {{ when }}",
            "Bonjour {{ name }},\n\nUn rappel : {{ student }} a un cours avec {{ teacher }} {{ when }}{% if room %} dans la salle {{ room }}{% endif %}.\n",
        ),
        sample: || json!({"student": "Hélène", "teacher": "Élodie Gagné", "when": "Tuesday 8 September at 16:00", "room": "Studio A"}),
    },
    Default {
        name: "lesson_changed",
        category: "transactional",
        en: (
            "{{ student }}'s lesson has moved",
            "Hello {{ name }},\n\n{{ student }}'s lesson of {{ before }} now takes place {{ after }}.\n",
        ),
        fr: (
            "Le cours de {{ student }} a changé",
            "Bonjour {{ name }},\n\nLe cours de {{ student }} du {{ before }} a maintenant lieu {{ after }}.\n",
        ),
        sample: || json!({"student": "Hélène", "before": "Tuesday 8 September at 16:00", "after": "Wednesday 9 September at 17:00"}),
    },
    Default {
        name: "lesson_cancelled",
        category: "transactional",
        en: (
            "{{ student }}'s lesson {{ when }} is cancelled",
            "Hello {{ name }},\n\n{{ student }}'s lesson {{ when }} is cancelled.{% if reason %} {{ reason }}{% endif %}\n",
        ),
        fr: (
            "Le cours de {{ student }} {{ when }} est annulé",
            "Bonjour {{ name }},\n\nLe cours de {{ student }} {{ when }} est annulé.{% if reason %} {{ reason }}{% endif %}\n",
        ),
        sample: || json!({"student": "Hélène", "when": "Tuesday 8 September at 16:00", "reason": null}),
    },
    Default {
        name: "invoice_issued",
        category: "transactional",
        en: (
            "Invoice {{ number }} from {{ school }}",
            "Hello {{ name }},\n\nInvoice {{ number }} for {{ total }} is due on {{ due_date }}.\n{% if view_link %}\nView or print it: {{ view_link }}\n{% endif %}{% if pay_link %}Pay online: {{ pay_link }}\n{% endif %}",
        ),
        fr: (
            "Facture {{ number }} de {{ school }}",
            "Bonjour {{ name }},\n\nLa facture {{ number }} de {{ total }} est payable d'ici le {{ due_date }}.\n{% if view_link %}\nLa consulter ou l'imprimer : {{ view_link }}\n{% endif %}{% if pay_link %}Payer en ligne : {{ pay_link }}\n{% endif %}",
        ),
        sample: || {
            json!({"number": "INV-2026-0001", "total": "$240.00", "due_date": "2026-10-01",
            "view_link": "https://cedar.example/v1/invoices/1/view?expires=1&sig=abc",
            "pay_link": "https://cedar.example/v1/invoices/1/pay?expires=1&sig=abc"})
        },
    },
    Default {
        name: "payment_received",
        category: "transactional",
        en: (
            "Payment received — thank you",
            "Hello {{ name }},\n\nWe received {{ amount }} for invoice {{ number }}. Thank you!\n",
        ),
        fr: (
            "Paiement reçu — merci",
            "Bonjour {{ name }},\n\nNous avons reçu {{ amount }} pour la facture {{ number }}. Merci !\n",
        ),
        sample: || json!({"amount": "$240.00", "number": "INV-2026-0001"}),
    },
    Default {
        name: "payment_failed",
        category: "transactional",
        en: (
            "Payment for invoice {{ number }} did not go through",
            "Hello {{ name }},\n\nThe payment of {{ amount }} for invoice {{ number }} failed{% if reason %} ({{ reason }}){% endif %}. Please update your payment method or contact us.\n",
        ),
        fr: (
            "Le paiement de la facture {{ number }} n'a pas abouti",
            "Bonjour {{ name }},\n\nLe paiement de {{ amount }} pour la facture {{ number }} a échoué{% if reason %} ({{ reason }}){% endif %}. Veuillez mettre à jour votre moyen de paiement ou nous contacter.\n",
        ),
        sample: || json!({"amount": "$240.00", "number": "INV-2026-0001", "reason": "card declined"}),
    },
    Default {
        name: "payment_reminder",
        category: "transactional",
        en: (
            "{% if overdue %}Overdue: {% else %}Reminder: {% endif %}invoice {{ number }}",
            "Hello {{ name }},\n\n{% if overdue %}Invoice {{ number }} was due on {{ due_date }}; {{ amount }} is still outstanding.{% else %}Invoice {{ number }} ({{ amount }} outstanding) is due on {{ due_date }}.{% endif %} You can pay by card in the app, by Interac e-Transfer, cheque or cash.\n",
        ),
        fr: (
            "{% if overdue %}En retard : {% else %}Rappel : {% endif %}facture {{ number }}",
            "Bonjour {{ name }},\n\n{% if overdue %}La facture {{ number }} était payable le {{ due_date }} ; il reste {{ amount }} à payer.{% else %}La facture {{ number }} ({{ amount }} à payer) est payable d'ici le {{ due_date }}.{% endif %} Vous pouvez payer par carte dans l'application, par virement Interac, chèque ou comptant.\n",
        ),
        sample: || json!({"number": "INV-2026-0001", "amount": "$240.00", "due_date": "2026-10-01", "overdue": false}),
    },
    Default {
        name: "new_message",
        category: "notification",
        en: (
            "{{ count }} new message{% if count != 1 %}s{% endif %} at {{ school }}",
            "Hello {{ name }},\n\n{% for m in messages %}{{ m.author }} in \"{{ m.subject }}\":\n{{ m.excerpt }}\n\n{% endfor %}Read and reply in the school app.\n",
        ),
        fr: (
            "{{ count }} nouveau{% if count != 1 %}x{% endif %} message{% if count != 1 %}s{% endif %} de {{ school }}",
            "Bonjour {{ name }},\n\n{% for m in messages %}{{ m.author }} dans « {{ m.subject }} » :\n{{ m.excerpt }}\n\n{% endfor %}Lisez et répondez dans l'application de l'école.\n",
        ),
        sample: || json!({"count": 1, "messages": [{"author": "Élodie Gagné", "subject": "Recital", "excerpt": "Hélène will play first."}]}),
    },
    Default {
        name: "attendance_nudge",
        category: "notification",
        en: (
            "Attendance to mark: {{ count }} lesson{% if count != 1 %}s{% endif %}",
            "Hello {{ name }},\n\nThese lessons have no attendance yet:\n{% for l in lessons %}- {{ l.when }}: {{ l.student }}\n{% endfor %}",
        ),
        fr: (
            "Présences à saisir : {{ count }} cours",
            "Bonjour {{ name }},\n\nCes cours n'ont pas encore de présence saisie :\n{% for l in lessons %}- {{ l.when }} : {{ l.student }}\n{% endfor %}",
        ),
        sample: || json!({"count": 1, "lessons": [{"when": "Tuesday 8 September at 16:00", "student": "Hélène Côté"}]}),
    },
    Default {
        name: "payment_issue_reply",
        category: "transactional",
        en: (
            "About invoice {{ number }}",
            "Hello {{ name }},\n\n{{ reply }}\n\nInvoice {{ number }}: {{ amount }} still due.\n",
        ),
        fr: (
            "Au sujet de la facture {{ number }}",
            "Bonjour {{ name }},\n\n{{ reply }}\n\nFacture {{ number }} : {{ amount }} restant à payer.\n",
        ),
        sample: || json!({"number": "INV-2026-0001", "amount": "$240.00", "reply": "We have set up a payment plan for you."}),
    },
    Default {
        name: "instalment_reminder",
        category: "transactional",
        en: (
            "Instalment {{ seq }} of {{ count }} for invoice {{ number }} is due {{ due_on }}",
            "Hello {{ name }},\n\nAs agreed, instalment {{ seq }} of {{ count }} for invoice {{ number }}, {{ amount }}, is due on {{ due_on }}. Thank you!\n",
        ),
        fr: (
            "Le versement {{ seq }} sur {{ count }} de la facture {{ number }} est dû le {{ due_on }}",
            "Bonjour {{ name }},\n\nComme convenu, le versement {{ seq }} sur {{ count }} de la facture {{ number }}, {{ amount }}, est dû le {{ due_on }}. Merci !\n",
        ),
        sample: || json!({"number": "INV-2026-0001", "amount": "$80.00", "seq": 2, "count": 3, "due_on": "2027-01-15"}),
    },
    Default {
        name: "progress_report",
        category: "transactional",
        en: (
            "Progress report: {{ period }}",
            "Hello {{ name }},\n\nHere is how lessons went from {{ period }}.\n{% for report in reports %}\n{{ report.student }}\n{{ report.summary }}\n\n{{ report.body }}\n\nPrintable version: {{ report.link }}\n{% endfor %}",
        ),
        fr: (
            "Bulletin de progrès : {{ period }}",
            "Bonjour {{ name }},\n\nVoici comment se sont passés les cours du {{ period }}.\n{% for report in reports %}\n{{ report.student }}\n{{ report.summary }}\n\n{{ report.body }}\n\nVersion imprimable : {{ report.link }}\n{% endfor %}",
        ),
        sample: || {
            json!({"period": "2026-11-01 – 2026-11-30", "reports": [{"student": "Hélène", "summary": "A strong month.",
            "body": "Hélène attended 4 of 4 lessons.", "link": "https://cedar.example/v1/progress-reports/1/html"}]})
        },
    },
    Default {
        name: "schedule_change",
        category: "transactional",
        en: (
            "New lesson times from {{ week_of }}",
            "Hello {{ name }},\n\n{% if note %}{{ note }}\n\n{% endif %}From the week of {{ week_of }}:\n{% for change in changes %}- {{ change.student }} ({{ change.instrument }}) with {{ change.teacher }}: {{ change.to }}{% if change.from %} (was {{ change.from }}){% endif %}\n{% endfor %}\nYour calendar already shows the new times.",
        ),
        fr: (
            "Nouvel horaire des cours à partir du {{ week_of }}",
            "Bonjour {{ name }},\n\n{% if note %}{{ note }}\n\n{% endif %}À partir de la semaine du {{ week_of }} :\n{% for change in changes %}- {{ change.student }} ({{ change.instrument }}) avec {{ change.teacher }} : {{ change.to }}{% if change.from %} (auparavant {{ change.from }}){% endif %}\n{% endfor %}\nVotre calendrier affiche déjà les nouveaux horaires.",
        ),
        sample: || {
            json!({"week_of": "2026-12-07", "note": "A better fit in your teacher's afternoon.", "changes": [{"student": "Hélène",
            "instrument": "piano", "teacher": "Élodie Gagné", "from": "Monday 16:30", "to": "Tuesday 16:00"}]})
        },
    },
    Default {
        name: "lessons_disrupted",
        category: "transactional",
        en: (
            "Lessons affected: {{ reason }}",
            "Hello {{ name }},\n\n{% if closure %}The school will be closed ({{ reason }}).{% else %}{{ teacher }} will be away ({{ reason }}).{% endif %} This affects:\n{% for lesson in lessons %}- {{ lesson.student }}: {{ lesson.when }}\n{% endfor %}\n{% if cancelled %}These lessons are cancelled and will not be billed.{% if makeup %} Each one earns a makeup lesson; reply to this email to book it.{% endif %}{% else %}We will write to you shortly with a new time for each.{% endif %}\n",
        ),
        fr: (
            "Cours touchés : {{ reason }}",
            "Bonjour {{ name }},\n\n{% if closure %}L'école sera fermée ({{ reason }}).{% else %}{{ teacher }} sera absent(e) ({{ reason }}).{% endif %} Cela touche :\n{% for lesson in lessons %}- {{ lesson.student }} : {{ lesson.when }}\n{% endfor %}\n{% if cancelled %}Ces cours sont annulés et ne seront pas facturés.{% if makeup %} Chacun donne droit à un cours de rattrapage; répondez à ce courriel pour le réserver.{% endif %}{% else %}Nous vous écrirons bientôt pour proposer un nouvel horaire pour chacun.{% endif %}\n",
        ),
        sample: || {
            json!({"reason": "Snow day", "closure": true, "teacher": "Élodie Gagné", "cancelled": true, "makeup": false,
            "lessons": [{"student": "Hélène", "teacher": "Élodie Gagné", "when": "Tuesday 8 December at 16:00"}]})
        },
    },
    Default {
        name: "student_withdrawn",
        category: "transactional",
        en: (
            "{{ student }} has withdrawn",
            "Hello {{ name }},\n\n{{ student }} ({{ instrument }}) has withdrawn from {{ effective }}. {{ lessons }} upcoming lesson(s) with you are cancelled; those times are free again.\n",
        ),
        fr: (
            "{{ student }} se retire",
            "Bonjour {{ name }},\n\n{{ student }} ({{ instrument }}) se retire à compter du {{ effective }}. {{ lessons }} cours à venir avec vous sont annulés; ces plages sont de nouveau libres.\n",
        ),
        sample: || json!({"student": "Hélène Tremblay", "instrument": "piano", "effective": "2026-12-14", "lessons": 3}),
    },
    Default {
        name: "lesson_substitute",
        category: "transactional",
        en: (
            "A substitute teacher for {{ student }} on {{ when }}",
            "Hello {{ name }},\n\n{{ student }}'s lesson on {{ when }} will be taught by {{ substitute }}{% if regular %} in place of {{ regular }}{% endif %}. The time and place are unchanged.\n",
        ),
        fr: (
            "Un enseignant remplaçant pour {{ student }} le {{ when }}",
            "Bonjour {{ name }},\n\nLe cours de {{ student }} du {{ when }} sera donné par {{ substitute }}{% if regular %} en remplacement de {{ regular }}{% endif %}. L'heure et le lieu ne changent pas.\n",
        ),
        sample: || json!({"student": "Hélène", "when": "Tuesday 8 December at 16:00", "substitute": "Marc Roy", "regular": "Élodie Gagné"}),
    },
    Default {
        name: "reenrollment_offer",
        category: "transactional",
        en: (
            "Continue lessons in {{ term }}?",
            "Hello {{ name }},\n\n{{ term }} starts on {{ starts_on }}. We have kept a place for:\n{% for student in students %}- {{ student.name }}: {{ student.lessons }}\n{% endfor %}\nPlease tell us by {{ reply_by }} whether to continue: accept or decline in the app, or reply to this email. Until then the place is kept for you; without an answer the office will be in touch.\n",
        ),
        fr: (
            "Poursuivre les cours à la session {{ term }}?",
            "Bonjour {{ name }},\n\nLa session {{ term }} commence le {{ starts_on }}. Nous avons gardé une place pour :\n{% for student in students %}- {{ student.name }} : {{ student.lessons }}\n{% endfor %}\nDites-nous d'ici le {{ reply_by }} si vous poursuivez : acceptez ou refusez dans l'application, ou répondez à ce courriel. D'ici là, la place vous est réservée; sans réponse, le secrétariat communiquera avec vous.\n",
        ),
        sample: || {
            json!({"term": "Winter 2027", "starts_on": "2027-01-04", "reply_by": "2026-12-21",
            "students": [{"name": "Hélène", "lessons": "piano, Tuesday 16:00 with Élodie Gagné"}]})
        },
    },
    Default {
        name: "owner_digest",
        category: "transactional",
        en: (
            "{{ school }} today: {{ reviews_waiting }} review(s), {{ tasks_overdue }} overdue task(s)",
            "Good morning {{ name }},\n\nWhat needs you on {{ date }}:\n- Reviews waiting: {{ reviews_waiting }}{% if reviews_waiting %} (the oldest for {{ oldest_review_hours }} h){% endif %}\n- Tasks: {{ tasks_open }} open, {{ tasks_overdue }} overdue\n- Card payments failed in the last day: {{ payments_failed }}\n- Dead jobs: {{ jobs_dead }}; undeliverable emails: {{ emails_dead }}\n- AI this month: CAD {{ ai_spent_cad }} of {{ ai_budget_cad }} ({{ ai_percent }} %)\n",
        ),
        fr: (
            "{{ school }} aujourd'hui : {{ reviews_waiting }} révision(s), {{ tasks_overdue }} tâche(s) en retard",
            "Bonjour {{ name }},\n\nCe qui vous attend le {{ date }} :\n- Révisions en attente : {{ reviews_waiting }}{% if reviews_waiting %} (la plus ancienne depuis {{ oldest_review_hours }} h){% endif %}\n- Tâches : {{ tasks_open }} ouvertes, {{ tasks_overdue }} en retard\n- Paiements par carte refusés depuis hier : {{ payments_failed }}\n- Tâches de fond abandonnées : {{ jobs_dead }}; courriels non livrés : {{ emails_dead }}\n- IA ce mois-ci : {{ ai_spent_cad }} $ sur {{ ai_budget_cad }} $ ({{ ai_percent }} %)\n",
        ),
        sample: || {
            json!({"date": "2026-12-01", "reviews_waiting": 2, "oldest_review_hours": 19, "tasks_open": 5, "tasks_overdue": 1,
            "payments_failed": 0, "jobs_dead": 0, "emails_dead": 1, "ai_spent_cad": "3.10", "ai_budget_cad": "20.00", "ai_percent": 15})
        },
    },
    Default {
        name: "owner_alert",
        category: "transactional",
        en: ("[{{ school }}] {{ title }}", "Hello {{ name }},\n\n{{ title }}.\n\n{{ detail }}\n"),
        fr: ("[{{ school }}] {{ title }}", "Bonjour {{ name }},\n\n{{ title }}.\n\n{{ detail }}\n"),
        sample: || json!({"title": "2 background job(s) died in the last hour", "detail": "GET /v1/jobs?status=dead shows why."}),
    },
];

pub fn find(name: &str) -> Option<&'static Default> {
    TEMPLATES.iter().find(|t| t.name == name)
}
