// Package layering holds the project's import rules as a test: which parts of the tree
// may not depend on which others. It has no code; `make lint` and `make test` run it.
package layering
