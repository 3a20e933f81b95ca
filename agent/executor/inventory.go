package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/inventory"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// NewInventory returns an inventory source for Config.Inventory: agent/inventory's report
// (tokens, their flags and PIN state, the USB device each sits on) in the protocol's form,
// with each token's certificates and public keys read through tokens (the report lists
// certificates without their DER, and the protocol carries their SHA-256). Tokens without
// a serial (blank tokens of some modules) cannot be named on the wire and are left out.
func NewInventory(opts inventory.Options, tokens Tokens, log zerolog.Logger) func(ctx context.Context) ([]protocol.Token, error) {
	return func(ctx context.Context) ([]protocol.Token, error) {
		rep, err := inventory.Collect(ctx, opts)
		if err != nil {
			return nil, err
		}
		if err := rep.ModuleErrors(); err != nil {
			log.Warn().Err(err).Msg("inventory: some modules could not be read")
		}
		var out []protocol.Token
		for _, m := range rep.Modules {
			for _, s := range m.Slots {
				if s.Token == nil || s.Token.Serial == "" {
					continue
				}
				t := protocolToken(*s.Token, s.USB)
				if s.Token.Initialized && tokens != nil {
					if err := addObjects(ctx, tokens, &t); err != nil {
						log.Warn().Err(err).Str("token", t.Serial).Msg("inventory: listing the token's objects")
					}
				}
				out = append(out, t)
			}
		}
		return out, nil
	}
}

func protocolToken(ti pkcs11.TokenInfo, u *inventory.USBIdentity) protocol.Token {
	t := protocol.Token{
		Serial:       truncate(ti.Serial, protocol.MaxTokenSerialLen),
		Label:        truncate(ti.Label, protocol.MaxTokenLabelLen),
		Model:        truncate(ti.Model, protocol.MaxTokenModelLen),
		Manufacturer: truncate(ti.Manufacturer, protocol.MaxTokenManufacturerLen),
		Firmware:     truncate(ti.FirmwareVersion, protocol.MaxTokenFirmwareLen),
		URI:          (&uri.URI{Serial: ti.Serial}).String(),
		Flags: protocol.TokenFlags{
			Initialized:        ti.Initialized,
			UserPINInitialized: ti.UserPINInitialized,
			LoginRequired:      ti.LoginRequired,
			WriteProtected:     ti.WriteProtected,
			ProtectedAuthPath:  ti.ProtectedAuthPath,
			UserPINCountLow:    ti.UserPIN.CountLow,
			UserPINFinalTry:    ti.UserPIN.FinalTry,
			UserPINLocked:      ti.UserPIN.Locked,
			UserPINToBeChanged: ti.UserPIN.ToBeChanged,
			SOPINCountLow:      ti.SOPIN.CountLow,
			SOPINFinalTry:      ti.SOPIN.FinalTry,
			SOPINLocked:        ti.SOPIN.Locked,
			SOPINToBeChanged:   ti.SOPIN.ToBeChanged,
		},
	}
	// Lengths beyond 255 are a module's "unavailable" markers, not limits.
	if ti.MinPINLen <= 255 && ti.MaxPINLen <= 255 && ti.MinPINLen <= ti.MaxPINLen {
		t.PINMinLength, t.PINMaxLength = int(ti.MinPINLen), int(ti.MaxPINLen)
	}
	if u != nil {
		if vid, pid, ok := strings.Cut(u.ID, ":"); ok {
			t.USB = &protocol.USBIdentity{VendorID: vid, ProductID: pid, Serial: truncate(u.Serial, protocol.MaxLabelLen),
				Vendor: truncate(u.Vendor, protocol.MaxLabelLen), Product: truncate(u.Model, protocol.MaxLabelLen)}
		}
	}
	return t
}

// addObjects adds the token's certificates and keys: public objects only, since the agent
// does not log in to take stock.
func addObjects(ctx context.Context, tokens Tokens, t *protocol.Token) error {
	tok, err := tokens.Open(ctx, t.Serial)
	if err != nil {
		return err
	}
	defer func() { _ = tok.Close() }()
	certs, err := tok.Certificates(ctx)
	if err != nil {
		return err
	}
	for _, c := range certs {
		if c.Cert == nil || len(t.Certificates) == protocol.MaxCertificatesPerToken {
			continue
		}
		sum := sha256.Sum256(c.DER)
		t.Certificates = append(t.Certificates, protocol.CertificateInfo{
			ID:        truncateHex(c.ID.String(), protocol.MaxKeyIDBytes),
			Label:     truncate(c.Label, protocol.MaxLabelLen),
			Subject:   truncate(c.Subject, protocol.MaxDNLen),
			Issuer:    truncate(c.Issuer, protocol.MaxDNLen),
			Serial:    truncateHex(hex.EncodeToString(c.Cert.SerialNumber.Bytes()), protocol.MaxSerialBytes),
			NotBefore: c.NotBefore.UTC(),
			NotAfter:  c.NotAfter.UTC(),
			SHA256:    hex.EncodeToString(sum[:]),
		})
	}
	keys, err := tok.Keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if len(t.Keys) == protocol.MaxKeysPerToken {
			break
		}
		t.Keys = append(t.Keys, protocol.KeyInfo{
			ID: truncateHex(k.ID.String(), protocol.MaxKeyIDBytes), Label: truncate(k.Label, protocol.MaxLabelLen),
			Type: keyTypeName(k.Spec), Private: k.Private, Public: k.Public,
		})
	}
	return nil
}

func keyTypeName(s *pkcs11.KeySpec) string {
	if s == nil {
		return "other"
	}
	switch {
	case s.Type == pkcs11.RSA:
		return fmt.Sprintf("rsa%d", s.Bits)
	case s.Type == pkcs11.EC && s.Curve == "P-256":
		return string(protocol.KeyP256)
	case s.Type == pkcs11.EC && s.Curve == "P-384":
		return string(protocol.KeyP384)
	case s.Type == pkcs11.EC:
		return "ec-" + strings.ToLower(strings.ReplaceAll(s.Curve, "-", ""))
	}
	return "other"
}

func truncate(s string, n int) string {
	return protocol.TruncateText(clean(s), n)
}

func truncateHex(s string, maxBytes int) string {
	if len(s) > 2*maxBytes {
		return s[:2*maxBytes]
	}
	return s
}
