-- Event forwarding: per destination, every Currents event already handled (accepted, or
-- permanently rejected with the answer). An event is pending until it has a row here, so an
-- event loaded late (Currents is at-least-once and late) is never skipped by a watermark.
CREATE TABLE {{schema}}.forward_events (
  destination  text NOT NULL,
  event_table  text NOT NULL,
  event_id     text NOT NULL,
  status       text NOT NULL CHECK (status IN ('sent', 'rejected')),
  http_status  int,
  response     text,
  run_id       bigint,
  handled_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (destination, event_table, event_id)
);
CREATE INDEX forward_events_rejected_idx ON {{schema}}.forward_events (destination, handled_at) WHERE status = 'rejected';

-- Identity stitching: once a Braze user is known by an external id, every later event of
-- theirs carries it, across runs.
CREATE TABLE {{schema}}.forward_identities (
  destination       text NOT NULL,
  braze_user_id     text NOT NULL,
  external_user_id  text NOT NULL,
  learned_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (destination, braze_user_id)
);
