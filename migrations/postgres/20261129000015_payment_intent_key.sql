-- The idempotency key the invoice's live PaymentIntent was created with: the same checkout
-- again finds it, a different one (other autopay choice) replaces and cancels it.
ALTER TABLE invoices ADD COLUMN stripe_payment_intent_key TEXT;
