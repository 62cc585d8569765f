-- Jobs Process could not hand to RabbitMQ, kept until the relay publishes them, oldest first.
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    run_id      uuid NOT NULL,
    job         jsonb NOT NULL,
    -- When a delayed job (the binding's `delay`) may run; NULL: at once.
    release_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
