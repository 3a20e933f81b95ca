package doctor

import (
	"context"
	"fmt"
)

// smartCardService checks that Windows' smart-card service, through which every PKCS#11
// module reaches smart cards and most USB tokens, runs.
func (e Env) smartCardService(context.Context) Result {
	if e.SmartCardService == nil {
		return skipped("the smart-card service cannot be queried on this system", "")
	}
	running, state, err := e.SmartCardService()
	switch {
	case err != nil:
		return fail(fmt.Sprintf("querying the smart-card service (SCardSvr): %v", err),
			"check it in services.msc, or: sc.exe query SCardSvr")
	case !running:
		return fail(fmt.Sprintf("the smart-card service (SCardSvr) is %s", state),
			"start it and have it start with Windows: sc.exe config SCardSvr start= auto, then sc.exe start SCardSvr (it also stops by itself when no reader is attached: plug the reader in)")
	}
	return pass("the smart-card service (SCardSvr) is running")
}
