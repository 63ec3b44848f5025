package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Service names, as RestartService and KillService take them.
const (
	ServicePostgres  = "postgres"
	ServiceDocker    = "dockerd"
	ServiceKeystone  = "keystone"
	ServiceRegion    = "region"
	ServiceImage     = "imagesvc"
	ServiceHostAgent = "hostagent"
)

// ComputeURL is the Nova endpoint, e.g. "http://127.0.0.1:8774/v2.1".
func (s *Stack) ComputeURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/v2.1", s.cfg.ComputePort)
}

// NetworkURL is the Neutron endpoint, e.g. "http://127.0.0.1:9696".
func (s *Stack) NetworkURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.cfg.NetworkPort) }

// ImageURL is the Glance endpoint, e.g. "http://127.0.0.1:9292".
func (s *Stack) ImageURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.cfg.ImagePort) }

// RegionDSN is region's database.
func (s *Stack) RegionDSN() string { return s.dsn(DBRegion) }

// ImageDSN is imagesvc's database.
func (s *Stack) ImageDSN() string { return s.dsn(DBImage) }

// AgentTokenFile holds the shared secret of the Berth daemons.
func (s *Stack) AgentTokenFile() string { return filepath.Join(s.cfg.RunDir, "agent-token") }

func (s *Stack) binary(name string) (string, error) {
	p := filepath.Join(s.cfg.BinDir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not built (make build): %w", p, err)
	}
	return p, nil
}

// startDaemons starts region, imagesvc and hostagent in that order, each
// once the one before serves.
func (s *Stack) startDaemons(ctx context.Context) error {
	for _, name := range []string{ServiceRegion, ServiceImage, ServiceHostAgent} {
		spec, err := s.daemonSpec(name)
		if err != nil {
			return err
		}
		if err := s.addProcess(spec).start(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stack) daemonSpec(name string) (procSpec, error) {
	ks := s.KeystoneURL()
	compute := "http://127.0.0.1:" + strconv.Itoa(s.cfg.ComputePort)
	switch name {
	case ServiceRegion:
		bin, err := s.binary("berth-region")
		if err != nil {
			return procSpec{}, err
		}
		return procSpec{
			name: name,
			path: bin,
			args: []string{
				"--listen", "127.0.0.1:" + strconv.Itoa(s.cfg.ComputePort),
				"--network-listen", "127.0.0.1:" + strconv.Itoa(s.cfg.NetworkPort),
				"--db", s.RegionDSN(),
				"--keystone-url", ks,
				"--image-url", s.ImageURL(),
				"--agent-token-file", s.AgentTokenFile(),
				"--default-cidr", s.cfg.CIDR,
			},
			ports: []int{s.cfg.ComputePort, s.cfg.NetworkPort},
			dir:   s.cfg.RunDir,
			ready: func(ctx context.Context) error { return httpExpect(ctx, compute+"/", http.StatusOK) },
		}, nil
	case ServiceImage:
		bin, err := s.binary("berth-imagesvc")
		if err != nil {
			return procSpec{}, err
		}
		return procSpec{
			name: name,
			path: bin,
			args: []string{
				"--listen", "127.0.0.1:" + strconv.Itoa(s.cfg.ImagePort),
				"--db", s.ImageDSN(),
				"--keystone-url", ks,
				"--data-dir", filepath.Join(s.cfg.RunDir, "images"),
				"--agent-token-file", s.AgentTokenFile(),
			},
			ports: []int{s.cfg.ImagePort},
			dir:   s.cfg.RunDir,
			ready: func(ctx context.Context) error {
				return httpExpect(ctx, s.ImageURL()+"/", http.StatusMultipleChoices, http.StatusOK)
			},
		}, nil
	case ServiceHostAgent:
		bin, err := s.binary("berth-hostagent")
		if err != nil {
			return procSpec{}, err
		}
		pause, err := s.binary("berth-pause")
		if err != nil {
			return procSpec{}, err
		}
		return procSpec{
			name: name,
			path: bin,
			args: []string{
				"--region-url", compute,
				"--image-url", s.ImageURL(),
				"--agent-token-file", s.AgentTokenFile(),
				"--host", s.cfg.HostName,
				"--bridge", s.cfg.Bridge,
				"--ovs-db", s.OVSDB(),
				"--pause-binary", pause,
				"--state-dir", filepath.Join(s.cfg.RunDir, "agent"),
				// Port 0: several stacks (make run and the tests) share a
				// machine; the agent registers the address it got.
				"--listen", "127.0.0.1:0",
			},
			dir:          s.cfg.RunDir,
			readyTimeout: 60 * time.Second,
			ready:        func(ctx context.Context) error { return s.hostRegistered(ctx) },
		}, nil
	}
	return procSpec{}, fmt.Errorf("unknown service %q", name)
}

// hostRegistered succeeds once region lists this stack's host as an "up"
// hypervisor, i.e. the hostagent registered and heartbeats. While region
// lacks os-hypervisors (404), the agent's own "registered with region" log
// line stands in.
func (s *Stack) hostRegistered(ctx context.Context) error {
	token, err := s.Token(ctx, UserAdmin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.ComputeURL()+"/os-hypervisors/detail", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusNotImplemented:
		return s.agentLogSays("registered with region")
	default:
		return fmt.Errorf("GET os-hypervisors/detail: status %d", resp.StatusCode)
	}
	var out struct {
		Hypervisors []struct {
			Name  string `json:"hypervisor_hostname"`
			State string `json:"state"`
		} `json:"hypervisors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("decode os-hypervisors: %w", err)
	}
	for _, h := range out.Hypervisors {
		if h.Name == s.cfg.HostName && h.State == "up" {
			return nil
		}
	}
	return fmt.Errorf("host %s not registered with region yet", s.cfg.HostName)
}

func (s *Stack) agentLogSays(msg string) error {
	p := s.Service(ServiceHostAgent)
	if p == nil {
		return errors.New("hostagent not started")
	}
	log, err := p.logSinceStart()
	if err != nil {
		return err
	}
	if strings.Contains(log, msg) {
		return nil
	}
	return fmt.Errorf("hostagent has not logged %q yet", msg)
}
