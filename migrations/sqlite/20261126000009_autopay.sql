-- Autopay (src/billing/stripe.rs): the card a family saved for paying invoices on their due date.
ALTER TABLE families ADD COLUMN stripe_autopay_method TEXT;
