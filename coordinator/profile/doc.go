// Package profile reads certificate profiles: YAML files that say what a job of that
// profile does to a token (initialise it or not, PIN policy, key type), what certificate
// it asks for (subject and SAN templates filled from the holder's attributes, key usages,
// validity) and which approval gates it passes.
//
// Loading is strict: unknown fields are refused, every problem is reported at once with
// its field path, and Load returns profiles in normal form (defaults filled, usage names
// canonical and sorted), so Canonical and Hash give the same result for two files that
// mean the same thing. The hash covers the whole profile, description included: an
// approval is bound to it, and any edit of the profile voids outstanding approvals.
//
// Templates use Go-template-like placeholders but only substitute holder attributes:
// {{.ID}}, {{.Name}}, {{.Email}}, {{.UPN}}, {{.Organization}} and {{.Attributes.key}}.
// There are no functions or conditionals, on purpose: a certificate subject is policy,
// and every placeholder is checked when the profile loads. A "{{" in literal text cannot
// be written.
//
// renew_before (e.g. 30d; absent or 0: none) asks for standing renewals: once a standing
// rollout of the profile is approved (tokenfleetctl rollout create --standing), the
// coordinator queues a renew job for each valid certificate of the profile when it comes
// within renew_before of its expiry, once, through that rollout's waves and brake. It must
// be below validity. Like every field it is part of the hash: setting it on a profile
// voids approvals outstanding on its jobs, and pauses its running rollouts.
//
// expiry_warning (e.g. 30d; absent or 0: none) asks for a notice to the holder and the
// help desk when a certificate of the profile has that long left (package notify). It must
// be below validity, and is part of the hash when set.
//
// temporary: {validity: 7d} (absent: none) lets the profile issue temporary tokens, the
// stand-in for a holder whose own token is suspended (package tokenlife): such a job's
// certificate lives temporary.validity instead of validity. It must not exceed validity,
// and is part of the hash when set.
package profile
