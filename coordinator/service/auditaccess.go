package service

import (
	"context"
)

// CanReadAudit checks that the actor may read the audit log and what vouches for it (its
// signed checkpoints): the admin or auditor role. A refusal is audited like any other.
// It is for operations on the audit log that live outside the service, such as the
// checkpointer's.
func (s *Service) CanReadAudit(ctx context.Context, by Actor) error {
	_, err := s.canRead(ctx, by.user, resAudit)
	return err
}
