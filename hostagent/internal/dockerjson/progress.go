// Package dockerjson reads Docker's JSON progress streams (image load,
// import, …), which report failures inside a 200 response.
package dockerjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// CheckProgress drains a Docker JSON progress stream and returns the first
// error message in it.
func CheckProgress(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read docker progress: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
	}
}
