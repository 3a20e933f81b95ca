package api

import _ "embed"

// OpenAPI is openapi.yaml, the description of the API: tests hold the server's responses
// to it (package apitest), and tools read it from here rather than from a path.
//
//go:embed openapi.yaml
var OpenAPI []byte
