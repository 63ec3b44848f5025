package compute

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"regexp"
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
	PrivateKey  string  `json:"private_key,omitempty"`
	UserID      string  `json:"user_id,omitempty"`
	ID          *int64  `json:"id,omitempty"`
	CreatedAt   string  `json:"created_at,omitempty"`
	Deleted     *bool   `json:"deleted,omitempty"`
	DeletedAt   *string `json:"deleted_at,omitempty"`
	UpdatedAt   *string `json:"updated_at,omitempty"`
}

func brief(k *store.Keypair) keypairView {
	return keypairView{Name: k.Name, PublicKey: k.PublicKey, Fingerprint: k.Fingerprint}
}

func full(k *store.Keypair) keypairView {
	v := brief(k)
	f := false
	v.UserID, v.ID, v.CreatedAt, v.Deleted = k.UserID, &k.ID, k.CreatedAt.UTC().Format(usageFormat), &f
	return v
}

func (a *API) listKeypairs(w http.ResponseWriter, r *http.Request) error {
	ks, err := a.cfg.Store.ListKeypairs(r.Context(), identity(r.Context()).UserID)
	if err != nil {
		return err
	}
	out := make([]map[string]keypairView, len(ks))
	for i := range ks {
		out[i] = map[string]keypairView{"keypair": brief(&ks[i])}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"keypairs": out})
	return nil
}

func (a *API) showKeypair(w http.ResponseWriter, r *http.Request) error {
	k, err := a.cfg.Store.FindKeypair(r.Context(), identity(r.Context()).UserID, mux.Vars(r)["name"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"keypair": full(k)})
	return nil
}

func (a *API) deleteKeypair(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.Store.DeleteKeypair(r.Context(), identity(r.Context()).UserID, mux.Vars(r)["name"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
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
	if kp.Type != "" && kp.Type != "ssh" {
		return apierr.Invalidf("Keypair data is invalid: only ssh keypairs are supported.")
	}
	id := identity(r.Context())
	if err := a.checkKeypairQuota(r, id.UserID, id.ProjectID); err != nil {
		return err
	}
	rec := store.Keypair{UserID: id.UserID, Name: kp.Name, Type: "ssh"}
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
		rec.PublicKey = strings.TrimSpace(kp.PublicKey)
		rec.Fingerprint = ssh.FingerprintLegacyMD5(pub)
	}
	k, err := a.cfg.Store.CreateKeypair(r.Context(), rec)
	if err != nil {
		return err
	}
	v := brief(k)
	v.UserID = k.UserID
	v.PrivateKey = private
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"keypair": v})
	return nil
}
