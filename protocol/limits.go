package protocol

// Size limits. Receivers check the whole message against MaxMessageSize
// before parsing anything, then against the per-type limit
// (MessageType.MaxSize), then each field and list below; senders get the
// same checks from Encode, so an oversized message fails where it is made,
// not at the far end.
//
// The largest messages are hello and inventory, which describe every token
// an agent sees. Real tokens hold a few dozen objects (a certificate is 1-2
// KiB of DER; token memory is 32-160 KiB), and a workstation has a handful
// of readers, so the caps are MaxTokens tokens of MaxKeysPerToken keys and
// MaxCertificatesPerToken certificates each. Measured (see
// TestInventoryAtCapsFits): an inventory at all three caps, with 100-byte
// subjects and issuers and 32-byte labels, encodes to about 660 KiB, well under
// MaxMessageSize. Pathological values (every field at its own limit) can
// still exceed it; Encode then fails with too_large and the agent must
// report less (for instance keys without certificate details).
const (
	// MaxMessageSize bounds a whole encoded message (envelope and body).
	// RabbitMQ accepts far larger; the bound keeps a hostile or broken
	// sender from making receivers parse megabytes.
	MaxMessageSize = 1 << 20

	// MaxTokens is the number of tokens one hello, inventory or inventory
	// result may describe.
	MaxTokens = 16
	// MaxKeysPerToken and MaxCertificatesPerToken bound one token's lists.
	MaxKeysPerToken         = 64
	MaxCertificatesPerToken = 64

	// MaxCertificateSize bounds one DER certificate; real ones are 1-4 KiB.
	MaxCertificateSize = 16 << 10
	// MaxChainLength bounds the issuer certificates sent with a leaf.
	MaxChainLength = 8
	// MaxCSRSize bounds one DER CSR.
	MaxCSRSize = 16 << 10
	// MaxPublicKeySize bounds a PKIX DER public key (RSA-4096: ~550 bytes).
	MaxPublicKeySize = 4 << 10
	// MaxKeyIDBytes bounds a CKA_ID. Ours are KeyIDSize bytes; foreign
	// objects found in an inventory may carry longer ones.
	MaxKeyIDBytes = 128
	// MaxSerialBytes bounds a certificate serial. RFC 5280 allows 20
	// octets; non-conforming CAs exist, and an inventory must list them.
	MaxSerialBytes = 40

	// MaxLabelLen bounds a CKA_LABEL and other short names, in bytes.
	MaxLabelLen = 128
	// MaxTextLen bounds free text: details, error messages, reasons.
	MaxTextLen = 1024
	// MaxDNLen bounds a distinguished name in RFC 4514 string form.
	MaxDNLen = 1024
	// MaxURILen bounds a PKCS#11 URI.
	MaxURILen = 1024
	// MaxHostnameLen is the DNS limit for a host name.
	MaxHostnameLen = 253
	// MaxShortLen bounds short identifiers: OS, architecture, versions,
	// profile names.
	MaxShortLen = 64

	// CK_TOKEN_INFO field sizes from PKCS#11: token labels and
	// manufacturer IDs are 32 bytes, models and serial numbers 16.
	MaxTokenLabelLen        = 32
	MaxTokenManufacturerLen = 32
	MaxTokenModelLen        = 16
	MaxTokenSerialLen       = 16
	// MaxTokenFirmwareLen bounds a firmware version: "major.minor" of two
	// bytes is at most 7 characters, with room to spare.
	MaxTokenFirmwareLen = 16

	// MaxSealedPlaintext bounds a sealed secret; PINs are far shorter.
	MaxSealedPlaintext = 256
	// MaxSealedKey bounds a sealed private key (PurposePrivateKey), PKCS#8
	// DER: RSA-4096 is about 2.4 KiB, EC keys far less.
	MaxSealedKey = 8 << 10

	// MinPINLength and MaxPINLength bound a PIN policy. Below 4 a PIN is a
	// guess away from being known; above 64 no token accepts it.
	MinPINLength = 4
	MaxPINLength = 64
)
