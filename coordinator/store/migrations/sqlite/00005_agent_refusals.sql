-- The last message the coordinator refused that claimed to come from an agent: what
-- `tokenfleetctl agents` shows beside an agent that looks merely offline. The sender is
-- the broker user that published it, which may not be the agent's own: the row says
-- "messages claiming to be this agent were refused", never that the agent sent them.
-- Keep this file and ../postgres/00005_agent_refusals.sql describing the same schema.

-- +goose Up
ALTER TABLE agents ADD COLUMN refused_at TEXT;
ALTER TABLE agents ADD COLUMN refused_code TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN refused_sender TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN refused_reason TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE agents DROP COLUMN refused_reason;
ALTER TABLE agents DROP COLUMN refused_sender;
ALTER TABLE agents DROP COLUMN refused_code;
ALTER TABLE agents DROP COLUMN refused_at;
