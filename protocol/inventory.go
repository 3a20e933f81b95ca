package protocol

import (
	"fmt"
	"time"
)

// Token describes one token an agent sees. Slot IDs are deliberately
// absent: they change between processes on some modules; tokens are named
// by serial (and URI).
type Token struct {
	// Serial, Label, Model and Manufacturer are the CK_TOKEN_INFO fields,
	// trimmed of their blank padding.
	Serial       string `json:"serial"`
	Label        string `json:"label,omitempty"`
	Model        string `json:"model,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	// Firmware is CK_TOKEN_INFO's firmware version, "major.minor".
	Firmware string `json:"firmware,omitempty"`
	// URI is a PKCS#11 URI that selects this token.
	URI   string     `json:"uri,omitempty"`
	Flags TokenFlags `json:"flags"`
	// PINMinLength and PINMaxLength are the token's own PIN limits.
	PINMinLength int          `json:"pin_min_length,omitempty"`
	PINMaxLength int          `json:"pin_max_length,omitempty"`
	USB          *USBIdentity `json:"usb,omitempty"`
	// Keys and Certificates list the objects found; private keys and
	// private objects only if the agent could log in.
	Keys         []KeyInfo         `json:"keys,omitempty"`
	Certificates []CertificateInfo `json:"certificates,omitempty"`
}

// Validate checks each field against its limit.
func (t Token) Validate() error {
	if err := checkText("serial", t.Serial, MaxTokenSerialLen, true); err != nil {
		return err
	}
	if err := checkText("label", t.Label, MaxTokenLabelLen, false); err != nil {
		return err
	}
	if err := checkText("model", t.Model, MaxTokenModelLen, false); err != nil {
		return err
	}
	if err := checkText("manufacturer", t.Manufacturer, MaxTokenManufacturerLen, false); err != nil {
		return err
	}
	if err := checkText("firmware", t.Firmware, MaxTokenFirmwareLen, false); err != nil {
		return err
	}
	if t.URI != "" {
		if err := (TokenSelector{URI: t.URI}).Validate(false); err != nil {
			return err
		}
	}
	// 255 is the largest PIN length a token reports in practice; anything
	// beyond is garbage from the module, better refused than displayed.
	const maxReported = 255
	if t.PINMinLength < 0 || t.PINMinLength > maxReported {
		return invalid("pin_min_length", "%d, want 0 to %d", t.PINMinLength, maxReported)
	}
	if t.PINMaxLength < 0 || t.PINMaxLength > maxReported {
		return invalid("pin_max_length", "%d, want 0 to %d", t.PINMaxLength, maxReported)
	}
	if t.PINMaxLength != 0 && t.PINMaxLength < t.PINMinLength {
		return invalid("pin_max_length", "%d is below pin_min_length %d", t.PINMaxLength, t.PINMinLength)
	}
	if t.USB != nil {
		if err := within("usb", t.USB.Validate()); err != nil {
			return err
		}
	}
	if err := checkList("keys", len(t.Keys), MaxKeysPerToken); err != nil {
		return err
	}
	for i, k := range t.Keys {
		if err := within(fmt.Sprintf("keys[%d]", i), k.Validate()); err != nil {
			return err
		}
	}
	if err := checkList("certificates", len(t.Certificates), MaxCertificatesPerToken); err != nil {
		return err
	}
	for i, c := range t.Certificates {
		if err := within(fmt.Sprintf("certificates[%d]", i), c.Validate()); err != nil {
			return err
		}
	}
	return nil
}

// TokenFlags are the CK_TOKEN_INFO flags a help desk acts on. False flags
// are omitted from JSON, which keeps an inventory small.
type TokenFlags struct {
	Initialized        bool `json:"initialized,omitempty"`
	UserPINInitialized bool `json:"user_pin_initialized,omitempty"`
	LoginRequired      bool `json:"login_required,omitempty"`
	WriteProtected     bool `json:"write_protected,omitempty"`
	ProtectedAuthPath  bool `json:"protected_auth_path,omitempty"`
	UserPINCountLow    bool `json:"user_pin_count_low,omitempty"`
	UserPINFinalTry    bool `json:"user_pin_final_try,omitempty"`
	UserPINLocked      bool `json:"user_pin_locked,omitempty"`
	UserPINToBeChanged bool `json:"user_pin_to_be_changed,omitempty"`
	SOPINCountLow      bool `json:"so_pin_count_low,omitempty"`
	SOPINFinalTry      bool `json:"so_pin_final_try,omitempty"`
	SOPINLocked        bool `json:"so_pin_locked,omitempty"`
	SOPINToBeChanged   bool `json:"so_pin_to_be_changed,omitempty"`
}

// USBIdentity is how the token shows on the USB bus, when the agent could
// match the PKCS#11 token to a USB device.
type USBIdentity struct {
	// VendorID and ProductID are 4 lowercase hex digits, as lsusb shows
	// them ("1050", "0407").
	VendorID  string `json:"vendor_id"`
	ProductID string `json:"product_id"`
	// Serial is the USB iSerialNumber string, which may differ from the
	// PKCS#11 serial.
	Serial string `json:"serial,omitempty"`
	// Vendor and Product are names from the agent's model registry.
	Vendor  string `json:"vendor,omitempty"`
	Product string `json:"product,omitempty"`
}

// Validate checks the IDs' form and the names' lengths.
func (u USBIdentity) Validate() error {
	for _, f := range []struct{ name, v string }{{"vendor_id", u.VendorID}, {"product_id", u.ProductID}} {
		if err := checkHex(f.name, f.v, 2, true); err != nil {
			return err
		}
		if len(f.v) != 4 {
			return invalid(f.name, "%q: want 4 hex digits", f.v)
		}
	}
	if err := checkText("serial", u.Serial, MaxLabelLen, false); err != nil {
		return err
	}
	if err := checkText("vendor", u.Vendor, MaxLabelLen, false); err != nil {
		return err
	}
	return checkText("product", u.Product, MaxLabelLen, false)
}

// KeyInfo is a key pair (or half of one) found on a token, grouped by
// CKA_ID.
type KeyInfo struct {
	// ID is the CKA_ID in lowercase hex; empty for objects without one.
	ID    string `json:"id,omitempty"`
	Label string `json:"label,omitempty"`
	// Type is a KeyType when the key is one profiles use, otherwise a short
	// description such as "rsa1024", "ec-secp256k1" or "other".
	Type string `json:"type"`
	// Private and Public say which halves are present: a public key alone
	// is left over from an interrupted generation.
	Private bool `json:"private,omitempty"`
	Public  bool `json:"public,omitempty"`
}

// Validate checks the key entry.
func (k KeyInfo) Validate() error {
	if err := checkHex("id", k.ID, MaxKeyIDBytes, false); err != nil {
		return err
	}
	if err := checkText("label", k.Label, MaxLabelLen, false); err != nil {
		return err
	}
	if k.Type == "" {
		return invalid("type", "required")
	}
	if len(k.Type) > maxKeyTypeLen {
		return tooLarge("type", len(k.Type), maxKeyTypeLen, "bytes")
	}
	for i := 0; i < len(k.Type); i++ {
		b := k.Type[i]
		if isLowerAlnum(b) || b == '-' {
			continue
		}
		return invalid("type", "%q: byte %d (%q) is not a lowercase letter, digit or '-'", k.Type, i, b)
	}
	if !k.Private && !k.Public {
		return invalid("", "neither private nor public is set")
	}
	return nil
}

const maxKeyTypeLen = 32

// CertificateInfo summarises a certificate found on a token: enough to
// show expiry and match it to a key, without the DER.
type CertificateInfo struct {
	// ID is the CKA_ID in lowercase hex; a certificate shares it with its
	// key.
	ID    string `json:"id,omitempty"`
	Label string `json:"label,omitempty"`
	// Subject and Issuer are RFC 4514 strings.
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	// Serial is the serial number's DER INTEGER content, lowercase hex.
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// SHA256 is the fingerprint of the DER certificate, lowercase hex.
	SHA256 string `json:"sha256"`
}

// Validate checks the certificate entry.
func (c CertificateInfo) Validate() error {
	if err := checkHex("id", c.ID, MaxKeyIDBytes, false); err != nil {
		return err
	}
	if err := checkText("label", c.Label, MaxLabelLen, false); err != nil {
		return err
	}
	if err := checkText("subject", c.Subject, MaxDNLen, false); err != nil {
		return err
	}
	if err := checkText("issuer", c.Issuer, MaxDNLen, false); err != nil {
		return err
	}
	if err := checkHex("serial", c.Serial, MaxSerialBytes, true); err != nil {
		return err
	}
	if err := checkTime("not_before", c.NotBefore, true); err != nil {
		return err
	}
	if err := checkTime("not_after", c.NotAfter, true); err != nil {
		return err
	}
	if c.NotAfter.Before(c.NotBefore) {
		return invalid("not_after", "%s is before not_before %s", c.NotAfter.Format(time.RFC3339), c.NotBefore.Format(time.RFC3339))
	}
	if err := checkHex("sha256", c.SHA256, 32, true); err != nil {
		return err
	}
	if len(c.SHA256) != 64 {
		return invalid("sha256", "%d hex digits, want 64", len(c.SHA256))
	}
	return nil
}
