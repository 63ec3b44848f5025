package compute

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/gorilla/mux"
	"golang.org/x/crypto/ssh"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
)

// keypairName is Nova's keypair name rule at 2.1.
var keypairName = regexp.MustCompile(`^[a-zA-Z0-9 _.@-]{1,255}$`)

type keypairView struct {
	Name        string  `json:"name"`
	PublicKey   string  `json:"public_key"`
	Fingerprint string  `json:"fingerprint"`
	Type        string  `json:"type,omitempty"`
	PrivateKey  string  `json:"private_key,omitempty"`
	UserID      string  `json:"user_id,omitempty"`
	ID          *int64  `json:"id,omitempty"`
	CreatedAt   string  `json:"created_at,omitempty"`
	Deleted     *bool   `json:"deleted,omitempty"`
	DeletedAt   *string `json:"deleted_at,omitempty"`
	UpdatedAt   *string `json:"updated_at,omitempty"`
}

func brief(r *http.Request, k *store.Keypair) keypairView {
	v := keypairView{Name: k.Name, PublicKey: k.PublicKey, Fingerprint: k.Fingerprint}
	if versionOf(r.Context()).AtLeast(Microversion{2, 2}) {
		v.Type = k.Type
	}
	return v
}

func full(r *http.Request, k *store.Keypair) keypairView {
	v := brief(r, k)
	f := false
	v.UserID, v.ID, v.CreatedAt, v.Deleted = k.UserID, &k.ID, k.CreatedAt.UTC().Format(usageFormat), &f
	return v
}

// keypairUser is whose keypairs a call is about: the caller's, or from
// microversion 2.10 an admin's ?user_id= (a member naming another user is 403).
func keypairUser(r *http.Request) (string, error) {
	id := identity(r.Context())
	u := r.URL.Query().Get("user_id")
	if u == "" || u == id.UserID || versionOf(r.Context()).Less(Microversion{2, 10}) {
		return id.UserID, nil
	}
	if !id.IsAdmin() {
		return "", apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-keypairs:index to be performed.")
	}
	return u, nil
}

func (a *API) listKeypairs(w http.ResponseWriter, r *http.Request) error {
	user, err := keypairUser(r)
	if err != nil {
		return err
	}
	ks, err := a.cfg.Store.ListKeypairs(r.Context(), user)
	if err != nil {
		return err
	}
	body := map[string]any{}
	// 2.35: limit and marker (a key name), in name order; a user has at
	// most key_pairs of them, so the page is cut here.
	if versionOf(r.Context()).AtLeast(Microversion{2, 35}) {
		q := r.URL.Query()
		limit, marker, err := pageParams(q)
		if err != nil {
			return err
		}
		if marker != "" {
			i := slices.IndexFunc(ks, func(k store.Keypair) bool { return k.Name == marker })
			if i < 0 {
				return apierr.Invalidf("marker [%s] not found", marker)
			}
			ks = ks[i+1:]
		}
		if len(ks) > limit {
			ks = ks[:limit]
		}
		if limit > 0 && len(ks) == limit && q.Get("limit") != "" {
			body["keypairs_links"] = nextLink(a.baseURL(r), r.URL.Path, q, ks[len(ks)-1].Name)
		}
	}
	out := make([]map[string]keypairView, len(ks))
	for i := range ks {
		out[i] = map[string]keypairView{"keypair": brief(r, &ks[i])}
	}
	body["keypairs"] = out
	httpx.WriteJSON(w, http.StatusOK, body)
	return nil
}

func (a *API) showKeypair(w http.ResponseWriter, r *http.Request) error {
	user, err := keypairUser(r)
	if err != nil {
		return err
	}
	k, err := a.cfg.Store.FindKeypair(r.Context(), user, mux.Vars(r)["name"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"keypair": full(r, k)})
	return nil
}

func (a *API) deleteKeypair(w http.ResponseWriter, r *http.Request) error {
	user, err := keypairUser(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.DeleteKeypair(r.Context(), user, mux.Vars(r)["name"]); err != nil {
		return err
	}
	// 202 at 2.1, 204 from 2.2.
	if versionOf(r.Context()).AtLeast(Microversion{2, 2}) {
		w.WriteHeader(http.StatusNoContent)
	} else {
		w.WriteHeader(http.StatusAccepted)
	}
	return nil
}

// createKeypair imports a public key or, without one, generates an RSA
// key pair and returns its private half once, as Nova does.
func (a *API) createKeypair(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Keypair *struct {
			Name      string `json:"name"`
			PublicKey string `json:"public_key"`
			Type      string `json:"type"`
			UserID    string `json:"user_id"`
		} `json:"keypair"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	kp := body.Keypair
	if kp == nil {
		return apierr.Invalidf("Invalid input for field/attribute keypair. 'keypair' is a required property.")
	}
	if !keypairName.MatchString(kp.Name) || strings.TrimSpace(kp.Name) != kp.Name {
		return apierr.Invalidf("Keypair data is invalid: Keypair name contains unsafe characters or is not 1-255 characters long.")
	}
	if kp.Type != "" && versionOf(r.Context()).Less(Microversion{2, 2}) {
		return apierr.Invalidf("Additional properties are not allowed ('type' was unexpected)")
	}
	if kp.Type != "" && kp.Type != "ssh" {
		return apierr.Invalidf("Keypair data is invalid: only ssh keypairs are supported.")
	}
	id := identity(r.Context())
	user := id.UserID
	if kp.UserID != "" && kp.UserID != id.UserID {
		switch {
		case versionOf(r.Context()).Less(Microversion{2, 10}):
			return apierr.Invalidf("Additional properties are not allowed ('user_id' was unexpected)")
		case !id.IsAdmin():
			return apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-keypairs:create to be performed.")
		}
		user = kp.UserID
	}
	if err := a.checkKeypairQuota(r, user, id.ProjectID); err != nil {
		return err
	}
	rec := store.Keypair{UserID: user, Name: kp.Name, Type: "ssh"}
	private := ""
	if kp.PublicKey == "" {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		pub, err := ssh.NewPublicKey(&key.PublicKey)
		if err != nil {
			return err
		}
		rec.PublicKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " Generated-by-Berth"
		rec.Fingerprint = ssh.FingerprintLegacyMD5(pub)
		private = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	} else {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(kp.PublicKey))
		if err != nil {
			return apierr.Invalidf("Keypair data is invalid: failed to generate fingerprint")
		}
		// Stored exactly as sent, as Nova does (a trailing newline included).
		rec.PublicKey = kp.PublicKey
		rec.Fingerprint = ssh.FingerprintLegacyMD5(pub)
	}
	k, err := a.cfg.Store.CreateKeypair(r.Context(), rec)
	if err != nil {
		return err
	}
	v := brief(r, k)
	v.UserID = k.UserID
	v.PrivateKey = private
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"keypair": v})
	return nil
}
