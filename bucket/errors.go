package bucket

import (
	"fmt"
	"strings"
)

// A FieldError is one problem with one field of a bucket, located in the file it came from when known.
type FieldError struct {
	File   string // "" when the spec did not come from a file
	Line   int    // 0 when unknown
	Bucket string // "" for problems outside a bucket, or when the name is unknown
	Field  string // e.g. "schedule", "activities.FetchRepo"
	Err    error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Bucket != "" {
		fmt.Fprintf(&b, "bucket %q: ", e.Bucket)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// A ValidationError lists every problem found, in file order.
type ValidationError []*FieldError

func (e ValidationError) Error() string {
	msgs := make([]string, len(e))
	for i, fe := range e {
		msgs[i] = fe.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.As find each *FieldError.
func (e ValidationError) Unwrap() []error {
	errs := make([]error, len(e))
	for i, fe := range e {
		errs[i] = fe
	}
	return errs
}
