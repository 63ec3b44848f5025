package netplumb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"
)

// switchDB is what the plumber needs of the Open_vSwitch database: ports
// and interfaces with their external_ids, VXLAN tunnels, the bridge. Every
// write returns once ovs-vswitchd has applied it (as ovs-vsctl waits):
// a new interface has its ofport, a deleted one's device is closed.
type switchDB interface {
	// findInterfaces lists interface rows whose external_ids match all of ext.
	findInterfaces(ctx context.Context, ext map[string]string) ([]ovsInterface, error)
	// interfaceByName returns the interface row of name, or nil.
	interfaceByName(ctx context.Context, name string) (*ovsInterface, error)
	// listAll lists every interface row.
	listAll(ctx context.Context) ([]ovsInterface, error)
	// setExt sets external_ids keys of an interface.
	setExt(ctx context.Context, iface string, ext map[string]string) error
	// addPort adds iface (a system device) to bridge with ext as its
	// external_ids; an existing interface of that name only gets ext.
	addPort(ctx context.Context, bridge, iface string, ext map[string]string) error
	// addTunnel adds or updates a VXLAN port.
	addTunnel(ctx context.Context, bridge, name string, opts, ext map[string]string) error
	// delPort removes the port named iface from its bridge, if any.
	delPort(ctx context.Context, iface string) error
	// bridge returns the bridge named name, or nil.
	bridge(ctx context.Context, name string) (*ovsBridge, error)
	// addBridge creates a bridge (with its internal port) of the datapath
	// type in fail_mode=secure.
	addBridge(ctx context.Context, name, dpType string) error
	// setFailMode sets a bridge's fail_mode.
	setFailMode(ctx context.Context, name, mode string) error
	close()
}

// ovsInterface is one interface row.
type ovsInterface struct {
	Name    string
	Ext     map[string]string
	OFPort  int // -1 when OVS has none (yet, or could not open it)
	Options map[string]string
}

// ovsBridge is one bridge row.
type ovsBridge struct {
	Name     string
	FailMode string
}

// OVSDB rows as libovsdb maps them: only the columns Berth uses.
type (
	rowRoot struct {
		UUID    string   `ovsdb:"_uuid"`
		Bridges []string `ovsdb:"bridges"`
		NextCfg int      `ovsdb:"next_cfg"`
		CurCfg  int      `ovsdb:"cur_cfg"`
	}
	rowBridge struct {
		UUID         string            `ovsdb:"_uuid"`
		Name         string            `ovsdb:"name"`
		Ports        []string          `ovsdb:"ports"`
		FailMode     *string           `ovsdb:"fail_mode"`
		DatapathType string            `ovsdb:"datapath_type"`
		ExternalIDs  map[string]string `ovsdb:"external_ids"`
	}
	rowPort struct {
		UUID        string            `ovsdb:"_uuid"`
		Name        string            `ovsdb:"name"`
		Interfaces  []string          `ovsdb:"interfaces"`
		ExternalIDs map[string]string `ovsdb:"external_ids"`
	}
	rowInterface struct {
		UUID        string            `ovsdb:"_uuid"`
		Name        string            `ovsdb:"name"`
		Type        string            `ovsdb:"type"`
		Options     map[string]string `ovsdb:"options"`
		ExternalIDs map[string]string `ovsdb:"external_ids"`
		OFPort      *int              `ovsdb:"ofport"`
	}
)

const (
	tableRoot      = "Open_vSwitch"
	tableBridge    = "Bridge"
	tablePort      = "Port"
	tableInterface = "Interface"
)

// libOVSDB is switchDB over one OVSDB connection (github.com/ovn-org/libovsdb):
// it monitors the four tables, reads from the monitor's cache and
// writes in transactions. It connects on first use and reconnects by
// itself.
type libOVSDB struct {
	endpoint string
	timeout  time.Duration

	mu sync.Mutex
	c  client.Client
}

func newLibOVSDB(endpoint string, timeout time.Duration) *libOVSDB {
	if endpoint == "" {
		endpoint = "unix:/var/run/openvswitch/db.sock" // ovs-vsctl's default
	}
	return &libOVSDB{endpoint: endpoint, timeout: timeout}
}

func (o *libOVSDB) client(ctx context.Context) (client.Client, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.c != nil {
		return o.c, nil
	}
	dbm, err := model.NewClientDBModel("Open_vSwitch", map[string]model.Model{
		tableRoot: &rowRoot{}, tableBridge: &rowBridge{}, tablePort: &rowPort{}, tableInterface: &rowInterface{},
	})
	if err != nil {
		return nil, err
	}
	// libovsdb's own logging (reconnects, cache updates) stays out: what
	// fails reaches the caller as an error, and a client left reconnecting
	// must not write to a log that has gone (a test's).
	lg := logr.Discard()
	bo := backoff.NewExponentialBackOff()
	bo.MaxInterval, bo.MaxElapsedTime = 2*time.Second, 0 // retry for ever
	c, err := client.NewOVSDBClient(dbm, client.WithEndpoint(o.endpoint), client.WithReconnect(o.timeout, bo), client.WithLogger(&lg))
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := c.Connect(cctx); err != nil {
		return nil, fmt.Errorf("connect to ovsdb %s: %w", o.endpoint, err)
	}
	// The model's columns only (without fields libovsdb asks for every
	// column of the schema, and updates of the others miss the model).
	var (
		root  rowRoot
		br    rowBridge
		port  rowPort
		iface rowInterface
	)
	if _, err := c.Monitor(cctx, c.NewMonitor(
		client.WithTable(&root, &root.Bridges, &root.NextCfg, &root.CurCfg),
		client.WithTable(&br, &br.Name, &br.Ports, &br.FailMode, &br.DatapathType, &br.ExternalIDs),
		client.WithTable(&port, &port.Name, &port.Interfaces, &port.ExternalIDs),
		client.WithTable(&iface, &iface.Name, &iface.Type, &iface.Options, &iface.ExternalIDs, &iface.OFPort),
	)); err != nil {
		c.Close()
		return nil, fmt.Errorf("monitor ovsdb %s: %w", o.endpoint, err)
	}
	o.c = c
	return c, nil
}

func (o *libOVSDB) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.c != nil {
		o.c.Close()
		o.c = nil
	}
}

func toInterface(r rowInterface) ovsInterface {
	it := ovsInterface{Name: r.Name, Ext: maps.Clone(r.ExternalIDs), OFPort: -1, Options: maps.Clone(r.Options)}
	if it.Ext == nil {
		it.Ext = map[string]string{}
	}
	if it.Options == nil {
		it.Options = map[string]string{}
	}
	if r.OFPort != nil {
		it.OFPort = *r.OFPort
	}
	return it
}

func (o *libOVSDB) interfaces(ctx context.Context) ([]rowInterface, error) {
	c, err := o.client(ctx)
	if err != nil {
		return nil, err
	}
	var rows []rowInterface
	if err := c.List(ctx, &rows); err != nil {
		return nil, fmt.Errorf("list ovs interfaces: %w", err)
	}
	return rows, nil
}

func (o *libOVSDB) listAll(ctx context.Context) ([]ovsInterface, error) {
	return o.findInterfaces(ctx, nil)
}

func (o *libOVSDB) findInterfaces(ctx context.Context, ext map[string]string) ([]ovsInterface, error) {
	rows, err := o.interfaces(ctx)
	if err != nil {
		return nil, err
	}
	var out []ovsInterface
next:
	for _, r := range rows {
		for k, v := range ext {
			if got, ok := r.ExternalIDs[k]; !ok || got != v {
				continue next
			}
		}
		out = append(out, toInterface(r))
	}
	return out, nil
}

func (o *libOVSDB) interfaceRow(ctx context.Context, name string) (*rowInterface, error) {
	rows, err := o.interfaces(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.Name == name {
			return &r, nil
		}
	}
	return nil, nil
}

func (o *libOVSDB) interfaceByName(ctx context.Context, name string) (*ovsInterface, error) {
	r, err := o.interfaceRow(ctx, name)
	if err != nil || r == nil {
		return nil, err
	}
	it := toInterface(*r)
	return &it, nil
}

func (o *libOVSDB) bridgeRow(ctx context.Context, c client.Client, name string) (*rowBridge, error) {
	var rows []rowBridge
	if err := c.List(ctx, &rows); err != nil {
		return nil, fmt.Errorf("list ovs bridges: %w", err)
	}
	for _, r := range rows {
		if r.Name == name {
			return &r, nil
		}
	}
	return nil, nil
}

func (o *libOVSDB) bridge(ctx context.Context, name string) (*ovsBridge, error) {
	c, err := o.client(ctx)
	if err != nil {
		return nil, err
	}
	r, err := o.bridgeRow(ctx, c, name)
	if err != nil || r == nil {
		return nil, err
	}
	b := &ovsBridge{Name: r.Name}
	if r.FailMode != nil {
		b.FailMode = *r.FailMode
	}
	return b, nil
}

func (o *libOVSDB) root(ctx context.Context, c client.Client) (*rowRoot, error) {
	var rows []rowRoot
	if err := c.List(ctx, &rows); err != nil {
		return nil, fmt.Errorf("read Open_vSwitch: %w", err)
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("ovsdb %s has %d Open_vSwitch rows (not initialized?)", o.endpoint, len(rows))
	}
	return &rows[0], nil
}

// transact runs ops, bumping next_cfg in the same transaction, and waits
// until ovs-vswitchd has applied that configuration (cur_cfg) and the
// cache has caught up with it, so that what follows reads the result:
// ofports of new interfaces, devices of deleted ones closed.
func (o *libOVSDB) transact(ctx context.Context, what string, build func(c client.Client) ([]ovsdb.Operation, error)) error {
	c, err := o.client(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	ops, err := build(c)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(ops) == 0 {
		return nil
	}
	root, err := o.root(ctx, c)
	if err != nil {
		return err
	}
	bump, err := c.Where(root).Mutate(root, model.Mutation{Field: &root.NextCfg, Mutator: ovsdb.MutateOperationAdd, Value: 1})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ops = append(ops, bump...)
	ops = append(ops, ovsdb.Operation{Op: ovsdb.OperationSelect, Table: tableRoot, Columns: []string{"next_cfg"},
		Where: []ovsdb.Condition{{Column: "_uuid", Function: ovsdb.ConditionEqual, Value: ovsdb.UUID{GoUUID: root.UUID}}}})
	res, err := c.Transact(ctx, ops...)
	if err != nil {
		return fmt.Errorf("%s: ovsdb transaction: %w", what, err)
	}
	if _, err := ovsdb.CheckOperationResults(res, ops); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	last := res[len(ops)-1]
	if len(last.Rows) != 1 {
		return fmt.Errorf("%s: next_cfg not read back", what)
	}
	var next int
	switch v := last.Rows[0]["next_cfg"].(type) {
	case float64:
		next = int(v)
	case int:
		next = v
	default:
		return fmt.Errorf("%s: next_cfg is %T", what, v)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := o.root(ctx, c)
		if err == nil && r.CurCfg >= next {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: ovs-vswitchd did not apply configuration %d: %w", what, next, ctx.Err())
		case <-tick.C:
		}
	}
}

func (o *libOVSDB) setExt(ctx context.Context, iface string, ext map[string]string) error {
	return o.transact(ctx, "set external_ids of "+iface, func(c client.Client) ([]ovsdb.Operation, error) {
		r, err := o.interfaceRow(ctx, iface)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, fmt.Errorf("no interface %s", iface)
		}
		r.ExternalIDs = merged(r.ExternalIDs, ext)
		return c.Where(r).Update(r, &r.ExternalIDs)
	})
}

func merged(base, over map[string]string) map[string]string {
	m := maps.Clone(base)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, over)
	return m
}

// newPortOps creates interface iface (its fields as given) with a port of
// the same name on bridge.
func newPortOps(c client.Client, br *rowBridge, iface *rowInterface) ([]ovsdb.Operation, error) {
	iface.UUID = "berth_iface"
	port := &rowPort{UUID: "berth_port", Name: iface.Name, Interfaces: []string{iface.UUID}}
	ops, err := c.Create(iface, port)
	if err != nil {
		return nil, err
	}
	mut, err := c.Where(br).Mutate(br, model.Mutation{Field: &br.Ports, Mutator: ovsdb.MutateOperationInsert, Value: []string{port.UUID}})
	return append(ops, mut...), err
}

func (o *libOVSDB) addPort(ctx context.Context, bridge, iface string, ext map[string]string) error {
	return o.transact(ctx, "add "+iface+" to "+bridge, func(c client.Client) ([]ovsdb.Operation, error) {
		if r, err := o.interfaceRow(ctx, iface); err != nil {
			return nil, err
		} else if r != nil {
			r.ExternalIDs = merged(r.ExternalIDs, ext)
			return c.Where(r).Update(r, &r.ExternalIDs)
		}
		br, err := o.bridgeRow(ctx, c, bridge)
		if err != nil {
			return nil, err
		}
		if br == nil {
			return nil, fmt.Errorf("no bridge %s", bridge)
		}
		return newPortOps(c, br, &rowInterface{Name: iface, ExternalIDs: maps.Clone(ext)})
	})
}

func (o *libOVSDB) addTunnel(ctx context.Context, bridge, name string, opts, ext map[string]string) error {
	return o.transact(ctx, "tunnel "+name, func(c client.Client) ([]ovsdb.Operation, error) {
		if r, err := o.interfaceRow(ctx, name); err != nil {
			return nil, err
		} else if r != nil {
			r.Type, r.Options, r.ExternalIDs = "vxlan", merged(r.Options, opts), merged(r.ExternalIDs, ext)
			return c.Where(r).Update(r, &r.Type, &r.Options, &r.ExternalIDs)
		}
		br, err := o.bridgeRow(ctx, c, bridge)
		if err != nil {
			return nil, err
		}
		if br == nil {
			return nil, fmt.Errorf("no bridge %s", bridge)
		}
		return newPortOps(c, br, &rowInterface{Name: name, Type: "vxlan", Options: maps.Clone(opts), ExternalIDs: maps.Clone(ext)})
	})
}

func (o *libOVSDB) delPort(ctx context.Context, iface string) error {
	return o.transact(ctx, "delete port "+iface, func(c client.Client) ([]ovsdb.Operation, error) {
		var ports []rowPort
		if err := c.List(ctx, &ports); err != nil {
			return nil, err
		}
		var uuid string
		for _, p := range ports {
			if p.Name == iface {
				uuid = p.UUID
			}
		}
		if uuid == "" {
			return nil, nil // --if-exists
		}
		var brs []rowBridge
		if err := c.List(ctx, &brs); err != nil {
			return nil, err
		}
		var ops []ovsdb.Operation
		for i := range brs {
			br := &brs[i]
			for _, p := range br.Ports {
				if p == uuid {
					// Port and Interface are not root tables: unreferenced,
					// OVSDB deletes them.
					mut, err := c.Where(br).Mutate(br, model.Mutation{Field: &br.Ports, Mutator: ovsdb.MutateOperationDelete, Value: []string{uuid}})
					if err != nil {
						return nil, err
					}
					ops = append(ops, mut...)
				}
			}
		}
		return ops, nil
	})
}

func (o *libOVSDB) addBridge(ctx context.Context, name, dpType string) error {
	return o.transact(ctx, "add bridge "+name, func(c client.Client) ([]ovsdb.Operation, error) {
		root, err := o.root(ctx, c)
		if err != nil {
			return nil, err
		}
		if br, err := o.bridgeRow(ctx, c, name); err != nil || br != nil {
			return nil, err // --may-exist
		}
		secure := "secure"
		iface := &rowInterface{UUID: "berth_iface", Name: name, Type: "internal"}
		port := &rowPort{UUID: "berth_port", Name: name, Interfaces: []string{iface.UUID}}
		br := &rowBridge{UUID: "berth_bridge", Name: name, Ports: []string{port.UUID}, FailMode: &secure, DatapathType: dpType}
		ops, err := c.Create(iface, port, br)
		if err != nil {
			return nil, err
		}
		mut, err := c.Where(root).Mutate(root, model.Mutation{Field: &root.Bridges, Mutator: ovsdb.MutateOperationInsert, Value: []string{br.UUID}})
		return append(ops, mut...), err
	})
}

func (o *libOVSDB) setFailMode(ctx context.Context, name, mode string) error {
	return o.transact(ctx, "fail_mode of "+name, func(c client.Client) ([]ovsdb.Operation, error) {
		br, err := o.bridgeRow(ctx, c, name)
		if err != nil {
			return nil, err
		}
		if br == nil {
			return nil, errors.New("no bridge " + name)
		}
		br.FailMode = &mode
		return c.Where(br).Update(br, &br.FailMode)
	})
}
