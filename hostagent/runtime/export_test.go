package runtime

// Inspected is how many containers List has inspected so far.
func (d *Docker) Inspected() int64 { return d.inspected.Load() }
