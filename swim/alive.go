package swim

import (
	"fmt"

	"github.com/hashicorp/memberlist"
)

// aliveDelegate is our memberlist.AliveDelegate: it admits a member only
// if its metadata decodes (node id, datacenter, role and version set), so
// everything in the member list can be attributed to a datacenter.
// memberlist calls it for every alive message, ours included, with its
// node table locked for writing; an error makes memberlist ignore the
// message (and log it). It must not block or call memberlist, and keeps
// no *Node.
type aliveDelegate struct{}

var _ memberlist.AliveDelegate = aliveDelegate{}

func (aliveDelegate) NotifyAlive(peer *memberlist.Node) error {
	if _, err := DecodeMeta(peer.Meta); err != nil {
		return fmt.Errorf("member %q rejected: %w", peer.Name, err)
	}
	return nil
}

// conflictDelegate is our memberlist.ConflictDelegate: two members that
// claim one name at different addresses are an operator error, logged
// loudly (memberlist keeps the first). Called with the node table locked;
// it only logs.
type conflictDelegate struct{ m *Memberlist }

var _ memberlist.ConflictDelegate = conflictDelegate{}

func (d conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	d.m.log.Error("two members claim the same name; the newcomer is ignored until the name is free",
		"name", existing.Name, "existing", existing.Address(), "newcomer", other.Address())
}
