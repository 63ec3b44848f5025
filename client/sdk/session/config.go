// Package session authenticates against Keystone the way OpenStack users
// expect — clouds.yaml (`OS_CLOUD`, `OS_CLIENT_CONFIG_FILE`, the standard
// search path) or `OS_*` environment variables — and hands out gophercloud
// service clients for compute, image and network from the token's catalog.
//
// Tokens are cached on disk (see Cache), so consecutive commands of a CLI
// do not re-authenticate: a cached token is reused until five minutes
// before it expires, and a 401 from any service re-authenticates once and
// refreshes the cache.
package session

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// Options say where the credentials come from. The zero value reads the
// process environment.
type Options struct {
	// Cloud is the clouds.yaml entry to use (--os-cloud); empty means
	// OS_CLOUD, and when that is empty too, the OS_* variables.
	Cloud string
	// Region and Interface override the cloud's region_name / interface
	// (and OS_REGION_NAME / OS_INTERFACE).
	Region, Interface string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// CacheDir is where tokens are cached; empty means
	// $XDG_CACHE_HOME/berth or ~/.cache/berth.
	CacheDir string
	// NoCache turns the token cache off (every run authenticates).
	NoCache bool
	// UserAgent is prepended to gophercloud's User-Agent, e.g. "berth/0.1".
	UserAgent string
}

func (o *Options) getenv(k string) string {
	if o.Getenv != nil {
		return o.Getenv(k)
	}
	return os.Getenv(k)
}

// Config is the resolved configuration of one cloud.
type Config struct {
	// CloudName is the clouds.yaml entry, or "" when from OS_* variables.
	CloudName string
	Auth      gophercloud.AuthOptions
	Endpoint  gophercloud.EndpointOpts
	TLS       *tls.Config
}

// ErrNoCloud means neither a cloud name nor OS_AUTH_URL was given.
var ErrNoCloud = errors.New("no cloud configured: use --os-cloud NAME (or OS_CLOUD) with a clouds.yaml, or set OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME")

// Resolve finds the cloud's credentials and endpoint options.
func Resolve(o Options) (*Config, error) {
	cloud := o.Cloud
	if cloud == "" {
		cloud = o.getenv("OS_CLOUD")
	}
	region := firstNonEmpty(o.Region, o.getenv("OS_REGION_NAME"))
	iface := firstNonEmpty(o.Interface, o.getenv("OS_INTERFACE"), o.getenv("OS_ENDPOINT_TYPE"))
	if cloud != "" {
		locs, err := CloudsYAMLLocations(o.getenv)
		if err != nil {
			return nil, err
		}
		opts := []clouds.ParseOption{clouds.WithCloudName(cloud), clouds.WithLocations(locs...)}
		if region != "" {
			opts = append(opts, clouds.WithRegion(region))
		}
		if iface != "" {
			opts = append(opts, clouds.WithEndpointType(iface))
		}
		ao, eo, tlsCfg, err := clouds.Parse(opts...)
		if err != nil {
			return nil, fmt.Errorf("cloud %q: %w", cloud, err)
		}
		if eo.Availability == "" {
			eo.Availability = gophercloud.AvailabilityPublic
		}
		return &Config{CloudName: cloud, Auth: ao, Endpoint: eo, TLS: tlsCfg}, nil
	}
	return fromEnv(o.getenv, region, iface)
}

// CloudsYAMLLocations is where clouds.yaml is looked for, as
// python-openstackclient does: only OS_CLIENT_CONFIG_FILE when it is set,
// else ./clouds.yaml, $XDG_CONFIG_HOME/openstack (~/.config/openstack) and
// /etc/openstack.
func CloudsYAMLLocations(getenv func(string) string) ([]string, error) {
	if p := getenv("OS_CLIENT_CONFIG_FILE"); p != "" {
		return []string{p}, nil
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	cfg := getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		home := getenv("HOME")
		if home == "" {
			if home, err = os.UserHomeDir(); err != nil {
				return nil, err
			}
		}
		cfg = filepath.Join(home, ".config")
	}
	return []string{
		filepath.Join(cwd, "clouds.yaml"),
		filepath.Join(cfg, "openstack", "clouds.yaml"),
		"/etc/openstack/clouds.yaml",
	}, nil
}

// fromEnv builds the configuration from OS_* variables, the way
// python-openstackclient reads them.
func fromEnv(getenv func(string) string, region, iface string) (*Config, error) {
	authURL := getenv("OS_AUTH_URL")
	if authURL == "" {
		return nil, ErrNoCloud
	}
	ao := gophercloud.AuthOptions{
		IdentityEndpoint:            authURL,
		Username:                    getenv("OS_USERNAME"),
		UserID:                      firstNonEmpty(getenv("OS_USER_ID"), getenv("OS_USERID")),
		Password:                    getenv("OS_PASSWORD"),
		DomainName:                  firstNonEmpty(getenv("OS_USER_DOMAIN_NAME"), getenv("OS_DOMAIN_NAME")),
		DomainID:                    firstNonEmpty(getenv("OS_USER_DOMAIN_ID"), getenv("OS_DOMAIN_ID")),
		ApplicationCredentialID:     getenv("OS_APPLICATION_CREDENTIAL_ID"),
		ApplicationCredentialName:   getenv("OS_APPLICATION_CREDENTIAL_NAME"),
		ApplicationCredentialSecret: getenv("OS_APPLICATION_CREDENTIAL_SECRET"),
	}
	projectID := firstNonEmpty(getenv("OS_PROJECT_ID"), getenv("OS_TENANT_ID"))
	projectName := firstNonEmpty(getenv("OS_PROJECT_NAME"), getenv("OS_TENANT_NAME"))
	switch {
	case ao.ApplicationCredentialID != "" || ao.ApplicationCredentialName != "":
		// Application credentials carry their own scope.
	case getenv("OS_SYSTEM_SCOPE") != "":
		ao.Scope = &gophercloud.AuthScope{System: true}
	case projectID != "":
		ao.Scope = &gophercloud.AuthScope{ProjectID: projectID}
	case projectName != "":
		ao.Scope = &gophercloud.AuthScope{
			ProjectName: projectName,
			DomainName:  firstNonEmpty(getenv("OS_PROJECT_DOMAIN_NAME"), getenv("OS_DOMAIN_NAME")),
			DomainID:    firstNonEmpty(getenv("OS_PROJECT_DOMAIN_ID"), getenv("OS_DOMAIN_ID")),
		}
		if ao.Scope.DomainName == "" && ao.Scope.DomainID == "" {
			ao.Scope.DomainID = "default"
		}
	}
	if ao.Username != "" && ao.DomainName == "" && ao.DomainID == "" {
		ao.DomainID = "default"
	}
	if ao.Username == "" && ao.UserID == "" && ao.ApplicationCredentialID == "" && ao.ApplicationCredentialName == "" {
		return nil, errors.New("OS_AUTH_URL is set but OS_USERNAME (or OS_USER_ID, or OS_APPLICATION_CREDENTIAL_ID) is not")
	}
	if iface == "" {
		iface = "public"
	}
	eo := gophercloud.EndpointOpts{Region: region, Availability: availability(iface)}
	cfg := &Config{Auth: ao, Endpoint: eo}
	insecure, _ := strconv.ParseBool(getenv("OS_INSECURE"))
	if ca := getenv("OS_CACERT"); ca != "" || insecure {
		cfg.TLS = &tls.Config{InsecureSkipVerify: insecure} //nolint:gosec // the user asked for it (OS_INSECURE)
		if ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("OS_CACERT: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("OS_CACERT %s: no certificate found", ca)
			}
			cfg.TLS.RootCAs = pool
		}
	}
	return cfg, nil
}

func availability(iface string) gophercloud.Availability {
	switch strings.TrimSuffix(strings.ToLower(iface), "url") {
	case "internal":
		return gophercloud.AvailabilityInternal
	case "admin":
		return gophercloud.AvailabilityAdmin
	}
	return gophercloud.AvailabilityPublic
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
