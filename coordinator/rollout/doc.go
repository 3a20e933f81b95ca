// Package rollout holds the rules of fleet rollouts as pure functions, like package jobs:
// the rollout spec and its validation, wave assignment, the binding hash an approval binds,
// the classification of job outcomes, the failure brake, maintenance windows, the engine's
// next-step decision and the ETA. Nothing here touches storage, the clock or the network:
// callers pass what they read and the current time. It imports only the standard library,
// the YAML decoder and package jobs.
//
// Decisions fixed here (the store, service, API and CLI rely on them):
//
//   - Normalize fills the defaults and Validate checks the spec as Normalize completes it,
//     returning every problem at once as *FieldError values (field path such as
//     "plan.waves[1]", and a message that says what to write instead).
//   - A rollout always has a canary (wave 0) of at least one target: a count, or a
//     percentage rounded up; with per_model, the first target of each token model joins it
//     first, so the canary may be larger than its count. The remaining targets fill the
//     waves in order: cumulative percentages (rounded up; a wave may be empty when there are
//     few targets) or exponential sizes Start, Start·Factor, ... (rounded up).
//   - A standing rollout (kind renew) has a canary of canary.count targets (at least 1) and
//     then one open wave that every later target joins (NextWave); percentages, waves,
//     exponential plans and per-model canaries are refused for it.
//   - The binding hash covers the domain "tokenfleet/rollout-binding/v1", the canonical
//     JSON of the normalized spec (including the profile's content hash) and every target
//     in seq order (seq, wave, agent, token, holder, certificate), each field
//     length-prefixed. Any change gives a new hash and voids the approvals of the old one.
//   - Outcomes: Classify maps a job's state and error code; cancelled and superseded jobs
//     count neither as executed nor as failures; a CA operator's rejection is refused.
//   - The brake looks at the overall tally first, then each wave's when per_wave. It trips
//     when executed >= min_executed and failures·100/executed >= threshold_percent (the
//     boundary trips), counting only its outcomes.
//   - Windows are wall-clock times in their zone: a window opens on its listed days at
//     start and closes at end the same day, or the next day when end is before start
//     (22:00–06:00). Across a DST change a window keeps its local hours (so it is an hour
//     shorter or longer); a start inside the skipped hour falls after the gap.
//
// Next, the engine's decision for one pass of a running rollout (the caller has already
// checked the brake, pauses and the profile):
//
//   - The current wave is finished when every target of it has a terminal job (its
//     tally's Pending and Open are 0); a wave with no targets is finished at once.
//   - Inside an unfinished wave: outside every maintenance window, nothing is created,
//     Waiting says until when and WakeAt is when the next window opens. Inside one, Create is
//     the wave's targets without a job, capped so that the rollout's open jobs (every wave)
//     stay within max_concurrent (no cap when 0); when the cap holds some back, Waiting
//     says so. With no target left to create, Waiting names the open jobs waited for.
//   - When the current wave is finished, Finished is true (the caller records
//     WaveFinishedAt = Now if it is zero). After the last wave, Complete — never for a
//     standing rollout, whose last wave stays open for new targets (and whose canary is
//     not finished before it holds canary.count targets). Otherwise, with
//     pause.until_promoted and no promote yet, WaitFor is "promote"; with pause.after and
//     Now before WaveFinishedAt+after (and no promote), Waiting and WakeAt say until when;
//     else NextWave: the caller moves to CurrentWave+1 (clearing WaveFinishedAt and
//     Promoted) and asks again. A promote also cuts a timed pause short.
package rollout
