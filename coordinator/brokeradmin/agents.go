package brokeradmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// MinPasswordLen is the shortest password an agent's user may get: the coordinator
// generates them, so a short one is a mistake, not a choice.
const MinPasswordLen = 16

// maxUserLen bounds a user name: RabbitMQ keeps it in AMQP short strings.
const maxUserLen = 255

// AgentUser is one agent's broker user to create or update.
type AgentUser struct {
	AgentID string
	// User is the broker user; empty means protocol.AgentUser(AgentID).
	User     string
	Password string
}

// PutAgent creates or updates the agent's broker user with this password and no tags,
// its permissions on the vhost and its topic permissions on the events exchange in the
// vhost, exactly protocol.AgentPermissions(AgentID); topic permissions of the user on
// other exchanges of the vhost are removed. Calling it again is harmless. A user that
// exists with tags (an operator's or a management user) or that is the client's own
// management user is refused with ErrNotAgentUser and left alone. Failures are
// *AgentError; after Close, ErrClosed.
//
// While more than 16 calls are in progress at once, those beyond share requests to the
// broker with the calls that arrive within Config.BatchWait of them (batch.go); each
// gets its own result.
//
// Channels the user already has open may keep, for their life, access they were granted
// before: RabbitMQ caches successful permission checks per channel.
func (c *Client) PutAgent(ctx context.Context, u AgentUser) error {
	cl, err := c.newCall(ctx, u)
	if err != nil {
		return err
	}
	if c.isClosed() {
		return c.agentError(cl.u, ErrClosed)
	}
	// While no more agents are being provisioned than the client has requests in flight,
	// each goes alone at once: a batch pays only when more arrive together.
	select {
	case c.alone <- struct{}{}:
		defer func() { <-c.alone }()
		return c.putAgentAlone(ctx, &cl.u)
	default:
		return c.putBatched(cl)
	}
}

// putBatched provisions the agent of cl in a batch.
func (c *Client) putBatched(cl *call) error {
	b := c.batcher()
	if b == nil {
		return c.agentError(cl.u, ErrClosed)
	}
	if err := b.put(cl.ctx, cl); err != nil {
		var ae *AgentError
		if errors.As(err, &ae) {
			return err
		}
		return c.agentError(cl.u, err)
	}
	return nil
}

// newCall checks u and makes its call for the batcher.
func (c *Client) newCall(ctx context.Context, u AgentUser) (*call, error) {
	p, err := c.checkAgent(&u)
	if err != nil {
		return nil, c.agentError(u, err)
	}
	return &call{ctx: ctx, u: u, perm: p, hash: c.hash(u.Password), done: make(chan error, 1)}, nil
}

// agentError is PutAgent's error for u.
func (c *Client) agentError(u AgentUser, err error) error {
	return &AgentError{AgentID: u.AgentID, Err: fmt.Errorf("provisioning broker user %q on vhost %q: %w", u.User, c.vhost, err)}
}

// checkAgent checks u, fills in its user, and returns its permissions.
func (c *Client) checkAgent(u *AgentUser) (protocol.Permissions, error) {
	p, err := protocol.AgentPermissions(u.AgentID)
	if err != nil {
		return p, fmt.Errorf("agent ID: %w", err)
	}
	if u.User == "" {
		u.User, _ = protocol.AgentUser(u.AgentID) // valid: AgentPermissions checked the ID
	}
	if err := checkUser(u.User); err != nil {
		return p, err
	}
	if err := checkPassword(u.Password); err != nil {
		return p, err
	}
	return p, nil
}

// putAgentAlone provisions one agent with its own requests: PutAgent without a batch.
func (c *Client) putAgentAlone(ctx context.Context, u *AgentUser) error {
	if err := c.putAgent(ctx, u); err != nil {
		return c.agentError(*u, err)
	}
	return nil
}

func (c *Client) putAgent(ctx context.Context, u *AgentUser) error {
	p, err := c.checkAgent(u)
	if err != nil {
		return err
	}
	existed, err := c.agentUserExists(ctx, u.User)
	if err != nil {
		return err
	}
	if err := c.putUser(ctx, u.User, u.Password); err != nil {
		return fmt.Errorf("creating the user: %w", err)
	}
	// The permissions and the topic permissions are independent: set them at once.
	var permErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.do(ctx, http.MethodPut, apiPath("permissions", c.vhost, u.User),
			map[string]string{"configure": p.Configure, "write": p.Write, "read": p.Read}, nil, nil); err != nil {
			permErr = fmt.Errorf("setting its permissions: %w", err)
		}
	})
	topicErr := func() error {
		if existed {
			if err := c.dropOtherTopicPermissions(ctx, u.User, p.TopicExchange); err != nil {
				return err
			}
		}
		if err := c.do(ctx, http.MethodPut, apiPath("topic-permissions", c.vhost, u.User),
			map[string]string{"exchange": p.TopicExchange, "write": p.TopicWrite, "read": p.TopicRead}, nil, nil); err != nil {
			return fmt.Errorf("setting its topic permissions on exchange %s: %w", p.TopicExchange, err)
		}
		return nil
	}()
	wg.Wait()
	if err := errors.Join(permErr, topicErr); err != nil {
		return err
	}
	c.log.Debug().Str("agent", u.AgentID).Str("broker_user", u.User).Bool("existed", existed).Msg("agent's broker user provisioned")
	return nil
}

// putUser sets a user's password, as a hash, and no tags (the API requires the field).
// When someone else creates the user between the broker's check and its creation (a
// definitions import the broker still applies after answering that it failed), the
// broker answers user_already_exists: the user then exists, and a second PUT updates it.
func (c *Client) putUser(ctx context.Context, user, password string) error {
	body := map[string]string{"password_hash": c.hash(password), "hashing_algorithm": hashingAlgorithm, "tags": ""}
	err := c.do(ctx, http.MethodPut, apiPath("users", user), body, nil, nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest && strings.Contains(ae.Reason, "user_already_exists") {
		err = c.do(ctx, http.MethodPut, apiPath("users", user), body, nil, nil)
	}
	return err
}

// dropOtherTopicPermissions removes the user's topic permissions on other exchanges of
// the vhost than keep. The API deletes a user's topic permissions of a vhost only all
// together; the caller then sets those on keep again.
func (c *Client) dropOtherTopicPermissions(ctx context.Context, user, keep string) error {
	var tps []struct {
		VHost    string `json:"vhost"`
		Exchange string `json:"exchange"`
	}
	if err := c.do(ctx, http.MethodGet, apiPath("users", user, "topic-permissions"), nil, &tps, nil); err != nil {
		return fmt.Errorf("listing its topic permissions: %w", err)
	}
	var other []string
	for _, tp := range tps {
		if tp.VHost == c.vhost && tp.Exchange != keep {
			other = append(other, tp.Exchange)
		}
	}
	if len(other) == 0 {
		return nil
	}
	c.log.Warn().Str("broker_user", user).Strs("exchanges", other).Msg("removing an agent user's topic permissions on other exchanges")
	if err := c.do(ctx, http.MethodDelete, apiPath("topic-permissions", c.vhost, user), nil, nil, nil); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("removing its topic permissions on %s: %w", strings.Join(other, ", "), err)
	}
	return nil
}

// PutAgents does what PutAgent does for many agents, all at once, in batches of up to
// Config.BatchMax agents that share requests to the broker; the client keeps at most 16
// requests in flight. It returns nil or the failures joined, each an *AgentError naming its agent;
// the others are provisioned all the same. A user listed twice is refused the second
// time.
func (c *Client) PutAgents(ctx context.Context, us []AgentUser) error {
	start := time.Now()
	errs := make([]error, len(us))
	owner := make(map[string]string, len(us)) // user → the agent that has it in this batch
	var wg sync.WaitGroup
	for i, u := range us {
		user := u.User
		if user == "" {
			user, _ = protocol.AgentUser(u.AgentID) // an invalid ID fails in PutAgent
		}
		if prev, dup := owner[user]; dup && user != "" {
			errs[i] = &AgentError{AgentID: u.AgentID, Err: fmt.Errorf("broker user %q is also agent %s's in this batch", user, prev)}
			continue
		}
		owner[user] = u.AgentID
		wg.Go(func() {
			cl, err := c.newCall(ctx, u)
			if err == nil {
				err = c.putBatched(cl)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	c.log.Info().Int("agents", len(us)).Int("failed", failed).Dur("took_ms", time.Since(start)).Msg("agents' broker users provisioned")
	return errors.Join(errs...)
}

// SetPassword changes the password of an agent's existing user (ErrNotFound if there is
// none; ErrNotAgentUser as for PutAgent). Its open connections stay open: RabbitMQ checks
// the password at login only. To cut them off, CloseConnections.
func (c *Client) SetPassword(ctx context.Context, user, password string) error {
	err := func() error {
		if err := checkUser(user); err != nil {
			return err
		}
		if err := checkPassword(password); err != nil {
			return err
		}
		exists, err := c.agentUserExists(ctx, user)
		if err != nil {
			return err
		}
		if !exists {
			// A PUT would create a user without permissions: refuse instead.
			return fmt.Errorf("%w: no such user; provision it with its agent's permissions first", ErrNotFound)
		}
		return c.putUser(ctx, user, password)
	}()
	if err != nil {
		return fmt.Errorf("changing the password of broker user %q: %w", user, err)
	}
	c.log.Info().Str("broker_user", user).Msg("agent's broker password changed")
	return nil
}

// RemoveAgent closes the user's connections on the vhost, telling their clients reason,
// and deletes the user (one already gone is no error), returning how many connections it
// closed. A user with tags, or the client's own management user, is refused with
// ErrNotAgentUser. A client that reconnects between the close and the deletion is cut
// off by the broker, which closes a deleted user's connections itself.
func (c *Client) RemoveAgent(ctx context.Context, user, reason string) (closed int, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("removing broker user %q: %w", user, err)
		}
	}()
	if err := checkUser(user); err != nil {
		return 0, err
	}
	if _, err := c.agentUserExists(ctx, user); err != nil {
		return 0, err
	}
	closed, err = c.CloseConnections(ctx, user, reason)
	if err != nil {
		return closed, err
	}
	if err := c.do(ctx, http.MethodDelete, apiPath("users", user), nil, nil, nil); err != nil && !errors.Is(err, ErrNotFound) {
		return closed, fmt.Errorf("deleting the user: %w", err)
	}
	c.log.Info().Str("broker_user", user).Int("connections_closed", closed).Str("reason", reason).Msg("agent's broker user removed")
	return closed, nil
}

// agentUserExists says whether user exists, refusing (ErrNotAgentUser) one that no agent
// may have: the client's own, or one with tags.
func (c *Client) agentUserExists(ctx context.Context, user string) (bool, error) {
	if user == c.user {
		return false, fmt.Errorf("%w: it is the management user this client logs in as", ErrNotAgentUser)
	}
	var u struct {
		Tags json.RawMessage `json:"tags"`
	}
	err := c.do(ctx, http.MethodGet, apiPath("users", user), nil, &u, nil)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking the user up: %w", err)
	}
	if tags := parseTags(u.Tags); len(tags) > 0 {
		return true, fmt.Errorf("%w: it exists with tags %s, so it belongs to an operator or an application; give the agent another broker user",
			ErrNotAgentUser, strings.Join(tags, ","))
	}
	return true, nil
}

// parseTags reads a user's tags: a list since RabbitMQ 3.9, a comma-separated string
// before.
func parseTags(raw json.RawMessage) []string {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return strings.Split(s, ",")
	}
	return nil
}

func checkUser(user string) error {
	if user == "" {
		return errors.New("user name is empty")
	}
	if len(user) > maxUserLen {
		return fmt.Errorf("user name is %d bytes long, longer than %d", len(user), maxUserLen)
	}
	for _, r := range user {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("user name %q contains a control character", user)
		}
	}
	return nil
}

func checkPassword(password string) error {
	if len(password) < MinPasswordLen {
		return fmt.Errorf("password is %d bytes long, shorter than %d: generate it with crypto/rand", len(password), MinPasswordLen)
	}
	if strings.ContainsRune(password, 0) {
		// AMQP's PLAIN mechanism separates user and password with NUL.
		return errors.New("password contains a NUL byte, which an AMQP login cannot carry")
	}
	return nil
}
