-- The found state of the token life cycle (package tokenlife): a lost or stolen token back
-- in the organisation's hands, to be wiped or retired.
-- Keep this file and ../sqlite/00018_token_found.sql describing the same schema.

-- +goose Up
ALTER TABLE token_life DROP CONSTRAINT token_life_state_check;
ALTER TABLE token_life ADD CONSTRAINT token_life_state_check
    CHECK (state IN ('active', 'suspended', 'lost', 'stolen', 'damaged', 'retired', 'replaced', 'found'));

-- +goose Down
-- A found token goes back to lost: the state it can be told apart from least harmfully.
UPDATE token_life SET state = 'lost' WHERE state = 'found';
ALTER TABLE token_life DROP CONSTRAINT token_life_state_check;
ALTER TABLE token_life ADD CONSTRAINT token_life_state_check
    CHECK (state IN ('active', 'suspended', 'lost', 'stolen', 'damaged', 'retired', 'replaced'));
