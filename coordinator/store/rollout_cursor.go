package store

import "strconv"

// RolloutTargetCursor is the cursor of the page that follows target t in
// ListRolloutTargets: for a caller that filters the targets further and stops inside a page.
func RolloutTargetCursor(t RolloutTarget) string { return encodeCursor(strconv.Itoa(t.Seq)) }
