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
package profile
