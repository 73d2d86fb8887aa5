//! Money arithmetic, in integer cents. Rounding rules (docs/billing.md):
//! - every line is rounded to the cent on its own, half away from zero;
//! - proration of a flat monthly fee: fee × active days ÷ days in the period;
//! - the sibling discount applies to each tuition line of the 2nd and later students of a
//!   family, students ordered by tuition, dearest first (the dearest pays full price);
//! - tax is computed once, on subtotal − discount, and rounded.

pub use crate::domain::Cents;

/// Tax at `rate` thousandths of a percent (13 % = 13_000).
pub fn tax(amount: Cents, rate: i64) -> Cents {
    amount.ratio(rate, 100_000)
}

/// One line of a draft invoice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Line {
    /// `tuition | credit | discount | registration | late_fee`.
    pub kind: &'static str,
    pub description: String,
    pub student_id: Option<uuid::Uuid>,
    pub quantity: i32,
    pub unit_cents: Cents,
    pub amount_cents: Cents,
}

/// Totals of a set of lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// Tuition, registration, credits and late fees.
    pub subtotal_cents: Cents,
    /// Sibling discounts, as a positive amount.
    pub discount_cents: Cents,
    pub tax_cents: Cents,
    pub total_cents: Cents,
}

pub fn totals(lines: &[Line], tax_rate: i64) -> Totals {
    let subtotal: Cents = lines.iter().filter(|l| l.kind != "discount").map(|l| l.amount_cents).sum();
    let discount: Cents = -lines.iter().filter(|l| l.kind == "discount").map(|l| l.amount_cents).sum::<Cents>();
    let taxable = (subtotal - discount).max(Cents::ZERO);
    let tax = tax(taxable, tax_rate);
    Totals { subtotal_cents: subtotal, discount_cents: discount, tax_cents: tax, total_cents: taxable + tax }
}

/// Adds the sibling discount lines: every student but the one with the most tuition gets
/// `percent` % off their tuition.
pub fn sibling_discounts(lines: &mut Vec<Line>, percent_off: i64) {
    if percent_off == 0 {
        return;
    }
    let mut students: Vec<(uuid::Uuid, Cents)> = Vec::new();
    for line in lines.iter().filter(|l| l.kind == "tuition" || l.kind == "credit") {
        let Some(id) = line.student_id else { continue };
        match students.iter_mut().find(|(s, _)| *s == id) {
            Some((_, total)) => *total += line.amount_cents,
            None => students.push((id, line.amount_cents)),
        }
    }
    // Dearest first; ties by id so the result never depends on query order.
    students.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (student, tuition) in students.into_iter().skip(1) {
        let amount = tuition.percent(percent_off);
        if amount.is_positive() {
            lines.push(Line {
                kind: "discount",
                description: format!("Sibling discount ({percent_off} %)"),
                student_id: Some(student),
                quantity: 1,
                unit_cents: -amount,
                amount_cents: -amount,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(Cents(14_000).ratio(17, 31), Cents(7_677)); // 7676.77
        assert_eq!(Cents(1_001).ratio(1, 2), Cents(501)); // 500.5 → 501
        assert_eq!(Cents(-1_001).ratio(1, 2), Cents(-501));
        assert_eq!(Cents(12_345).percent(10), Cents(1_235)); // 1234.5 → 1235
        assert_eq!(tax(Cents(10_000), 13_000), Cents(1_300));
        assert_eq!(tax(Cents(9_999), 14_975), Cents(1_497)); // 1497.35
        assert_eq!(Cents(5).ratio(1, 0), Cents::ZERO);
    }

    #[test]
    fn dollars_are_formatted_for_people() {
        assert_eq!(Cents(123_450).format_cad(), "$1,234.50");
        assert_eq!(Cents(5).format_cad(), "$0.05");
        assert_eq!(Cents(-1_500).format_cad(), "-$15.00");
        assert_eq!(Cents(100_000_000).format_cad(), "$1,000,000.00");
    }

    fn tuition(student: Uuid, amount: i64) -> Line {
        Line {
            kind: "tuition",
            description: "x".into(),
            student_id: Some(student),
            quantity: 1,
            unit_cents: Cents(amount),
            amount_cents: Cents(amount),
        }
    }

    #[test]
    fn the_dearest_student_pays_full_price_and_siblings_get_the_discount() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut lines = vec![tuition(a, 14_000), tuition(b, 17_500), tuition(c, 7_677)];
        sibling_discounts(&mut lines, 10);
        let discounts: Vec<(Option<Uuid>, Cents)> =
            lines.iter().filter(|l| l.kind == "discount").map(|l| (l.student_id, l.amount_cents)).collect();
        assert_eq!(discounts, [(Some(a), Cents(-1_400)), (Some(c), Cents(-768))]);
        let t = totals(&lines, 13_000);
        assert_eq!(t.subtotal_cents, Cents(39_177));
        assert_eq!(t.discount_cents, Cents(2_168));
        assert_eq!(t.tax_cents, Cents(4_811)); // 13 % of 37,009 = 4811.17
        assert_eq!(t.total_cents, Cents(41_820));
    }

    #[test]
    fn one_student_gets_no_discount_and_credits_lower_the_base() {
        let a = Uuid::now_v7();
        let mut lines = vec![tuition(a, 14_000)];
        sibling_discounts(&mut lines, 10);
        assert_eq!(lines.len(), 1);
        lines.push(Line {
            kind: "credit",
            description: "c".into(),
            student_id: Some(a),
            quantity: 1,
            unit_cents: Cents(-3_500),
            amount_cents: Cents(-3_500),
        });
        assert_eq!(
            totals(&lines, 0),
            Totals {
                subtotal_cents: Cents(10_500),
                discount_cents: Cents::ZERO,
                tax_cents: Cents::ZERO,
                total_cents: Cents(10_500)
            }
        );
    }
}
