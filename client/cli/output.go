package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/mattn/go-runewidth"
	"gopkg.in/yaml.v3"
)

// Output formats, as python-openstackclient names them.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
	formatValue = "value"
)

var formats = []string{formatTable, formatJSON, formatYAML, formatValue}

// cell is a value with a separate human form: JSON and YAML show Raw, a
// table or -f value shows Text.
type cell struct {
	Raw  any
	Text string
}

func (c cell) MarshalJSON() ([]byte, error) { return json.Marshal(c.Raw) }

// list is the output of a list command: named columns, one row per item.
type list struct {
	Columns []string
	Rows    [][]any
}

// field is one line of a show command's output.
type field struct {
	Name  string
	Value any
}

// record is the output of a show command.
type record []field

// outputOpts are the -f/-c options of one command.
type outputOpts struct {
	format  string
	columns []string
}

func (o *outputOpts) check() error {
	for _, f := range formats {
		if o.format == f {
			return nil
		}
	}
	return usagef("invalid format %q: choose from %s", o.format, strings.Join(formats, ", "))
}

// pick returns the indexes of the selected columns, in -c order.
func (o *outputOpts) pick(names []string) ([]int, error) {
	if len(o.columns) == 0 {
		idx := make([]int, len(names))
		for i := range names {
			idx[i] = i
		}
		return idx, nil
	}
	var idx []int
	for _, want := range o.columns {
		found := -1
		for i, n := range names {
			if n == want {
				found = i
				break
			}
		}
		if found < 0 {
			for i, n := range names {
				if strings.EqualFold(n, want) {
					found = i
					break
				}
			}
		}
		if found < 0 {
			return nil, usagef("no column %q; the columns are: %s", want, strings.Join(names, ", "))
		}
		idx = append(idx, found)
	}
	return idx, nil
}

func (o *outputOpts) writeList(w io.Writer, l list) error {
	idx, err := o.pick(l.Columns)
	if err != nil {
		return err
	}
	cols := make([]string, len(idx))
	for i, j := range idx {
		cols[i] = l.Columns[j]
	}
	rows := make([][]any, len(l.Rows))
	for r, row := range l.Rows {
		rows[r] = make([]any, len(idx))
		for i, j := range idx {
			if j < len(row) {
				rows[r][i] = row[j]
			}
		}
	}
	switch o.format {
	case formatJSON:
		items := make([]orderedMap, len(rows))
		for r, row := range rows {
			items[r] = orderedMap{keys: cols, values: row}
		}
		return writeJSON(w, items)
	case formatYAML:
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, row := range rows {
			n, err := yamlMap(cols, row)
			if err != nil {
				return err
			}
			seq.Content = append(seq.Content, n)
		}
		return writeYAML(w, seq)
	case formatValue:
		for _, row := range rows {
			parts := make([]string, len(row))
			for i, v := range row {
				parts[i] = text(v)
			}
			fmt.Fprintln(w, strings.Join(parts, " "))
		}
		return nil
	default:
		if len(rows) == 0 {
			return nil // python-openstackclient prints nothing for an empty list
		}
		text := make([][]string, len(rows))
		for r, row := range rows {
			text[r] = make([]string, len(row))
			for i, v := range row {
				text[r][i] = tableText(v)
			}
		}
		writeTable(w, cols, text)
		return nil
	}
}

func (o *outputOpts) writeRecord(w io.Writer, rec record) error {
	names := make([]string, len(rec))
	for i, f := range rec {
		names[i] = f.Name
	}
	idx, err := o.pick(names)
	if err != nil {
		return err
	}
	keys := make([]string, len(idx))
	vals := make([]any, len(idx))
	for i, j := range idx {
		keys[i], vals[i] = rec[j].Name, rec[j].Value
	}
	switch o.format {
	case formatJSON:
		return writeJSON(w, orderedMap{keys: keys, values: vals})
	case formatYAML:
		n, err := yamlMap(keys, vals)
		if err != nil {
			return err
		}
		return writeYAML(w, n)
	case formatValue:
		for _, v := range vals {
			fmt.Fprintln(w, text(v))
		}
		return nil
	default:
		rows := make([][]string, len(keys))
		for i := range keys {
			rows[i] = []string{keys[i], tableText(vals[i])}
		}
		writeTable(w, []string{"Field", "Value"}, rows)
		return nil
	}
}

// orderedMap marshals to a JSON object with its keys in order.
type orderedMap struct {
	keys   []string
	values []any
}

func (m orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range m.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := marshalNoEscape(m.values[i])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func writeJSON(w io.Writer, v any) error {
	raw, err := marshalNoEscape(v)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err = w.Write(b.Bytes())
	return err
}

func yamlMap(keys []string, vals []any) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for i, k := range keys {
		var vn yaml.Node
		if err := vn.Encode(plain(vals[i])); err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, &vn)
	}
	return n, nil
}

// plain turns a value into what JSON would show (cells become their raw
// value, structs their JSON form), so YAML and JSON agree.
func plain(v any) any {
	switch x := v.(type) {
	case nil, string, bool, int, int64, float64:
		return x
	case cell:
		return plain(x.Raw)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	var out any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if dec.Decode(&out) != nil {
		return fmt.Sprint(v)
	}
	return numbersToGo(out)
}

func numbersToGo(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbersToGo(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbersToGo(e)
		}
	}
	return v
}

func writeYAML(w io.Writer, n *yaml.Node) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return err
	}
	return enc.Close()
}

// text is the one-line human form of a value (for -f value).
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case cell:
		return x.Text
	case string:
		return x
	case bool:
		if x {
			return "True"
		}
		return "False"
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		return x.String()
	case []string:
		return strings.Join(x, ", ")
	case map[string]string:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "='" + x[k] + "'"
		}
		return strings.Join(parts, ", ")
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "='" + text(x[k]) + "'"
		}
		return strings.Join(parts, ", ")
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = text(e)
		}
		return strings.Join(parts, ", ")
	case fmt.Stringer:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// tableText is text, except that a cell may span several lines.
func tableText(v any) string { return text(v) }

// writeTable draws python-openstackclient's (prettytable's) boxes.
func writeTable(w io.Writer, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = runewidth.StringWidth(h)
	}
	split := make([][][]string, len(rows))
	for r, row := range rows {
		split[r] = make([][]string, len(row))
		for i, c := range row {
			lines := strings.Split(strings.TrimRight(c, "\n"), "\n")
			split[r][i] = lines
			for _, l := range lines {
				if n := runewidth.StringWidth(l); n > widths[i] {
					widths[i] = n
				}
			}
		}
	}
	var b strings.Builder
	sep := func() {
		b.WriteByte('+')
		for _, wd := range widths {
			b.WriteString(strings.Repeat("-", wd+2))
			b.WriteByte('+')
		}
		b.WriteByte('\n')
	}
	line := func(cells []string) {
		b.WriteByte('|')
		for i, wd := range widths {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteByte(' ')
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", wd-runewidth.StringWidth(c)))
			b.WriteString(" |")
		}
		b.WriteByte('\n')
	}
	sep()
	line(header)
	sep()
	for _, row := range split {
		height := 1
		for _, lines := range row {
			height = max(height, len(lines))
		}
		for l := 0; l < height; l++ {
			cells := make([]string, len(row))
			for i, lines := range row {
				if l < len(lines) {
					cells[i] = lines[l]
				}
			}
			line(cells)
		}
	}
	sep()
	_, _ = io.WriteString(w, b.String())
}
