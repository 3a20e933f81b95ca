package brokeradmin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
)

// hashingAlgorithm names RabbitMQ's salted SHA-256 scheme; the broker stores it with the
// user, so logins check the hash with it whatever the broker's password_hashing_module.
const hashingAlgorithm = "rabbit_password_hashing_sha256"

// passwordHash is RabbitMQ's password_hash of password: base64(salt ‖ SHA-256(salt ‖
// password)) with a 4-byte random salt, as rabbit_password:hash/2 computes it.
func passwordHash(password string) string {
	salt := make([]byte, 4)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails (Go 1.24+)
	return saltedHash(salt, password)
}

func saltedHash(salt []byte, password string) string {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(password))
	return base64.StdEncoding.EncodeToString(h.Sum(append([]byte(nil), salt...)))
}
