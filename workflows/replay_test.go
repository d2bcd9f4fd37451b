package workflows_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/workflows"
)

// TestReplayRecordedHistories replays every history recorded in
// testdata/histories on today's workflow code. Replaying catches a change in
// the commands a history records, but not in what they carry, nor in what
// update handlers return; so every update handler must also return what the
// history says it returned, every signal, child workflow and memo upsert
// must carry the recorded input, and a run that closed must close with the
// same result, failure or continue-as-new input.
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "histories", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded histories in testdata/histories")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			hist := readHistory(t, file)
			rec := &outcomes{updates: map[string]outcome{}}
			r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{
				Interceptors: []interceptor.WorkerInterceptor{rec},
			})
			if err != nil {
				t.Fatal(err)
			}
			workflows.Register(r)
			logger := log.NewStructuredLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err := r.ReplayWorkflowHistoryFromJSONFile(logger, file); err != nil {
				t.Fatalf("%s does not replay: %v", file, err)
			}
			compared, err := rec.compare(hist)
			if err != nil {
				t.Fatalf("%s replays, but decides differently: %v", file, err)
			}
			t.Logf("%d events replayed; compared %s", len(hist.GetEvents()), compared)
		})
	}
}

func readHistory(t *testing.T, file string) *historypb.History {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	if err != nil {
		t.Fatalf("reading %s: %v", file, err)
	}
	if len(hist.GetEvents()) == 0 {
		t.Fatalf("%s holds no events", file)
	}
	return hist
}

// outcomes is a worker interceptor that notes what the workflow decided
// during a replay: the result of every update handler, by update ID; what
// the workflow function returned, if it returned; and, in order, the
// arguments of every signal it sent, child it started and memo it upserted,
// which replaying alone does not compare.
type outcomes struct {
	interceptor.WorkerInterceptorBase

	mu       sync.Mutex
	updates  map[string]outcome
	repeated []string // update IDs handled more than once
	closed   *outcome
	signals  [][]any
	children [][]any
	memos    []map[string]any
}

type outcome struct {
	name  string // of the update
	value any
	err   error
}

func (o *outcomes) InterceptWorkflow(ctx workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	return &outcomesInbound{WorkflowInboundInterceptorBase: interceptor.WorkflowInboundInterceptorBase{Next: next}, o: o}
}

type outcomesInbound struct {
	interceptor.WorkflowInboundInterceptorBase
	o *outcomes
}

func (i *outcomesInbound) Init(outbound interceptor.WorkflowOutboundInterceptor) error {
	return i.Next.Init(&outcomesOutbound{WorkflowOutboundInterceptorBase: interceptor.WorkflowOutboundInterceptorBase{Next: outbound}, o: i.o})
}

func (i *outcomesInbound) ExecuteUpdate(ctx workflow.Context, in *interceptor.UpdateInput) (any, error) {
	v, err := i.Next.ExecuteUpdate(ctx, in)
	id := workflow.GetCurrentUpdateInfo(ctx).ID
	i.o.mu.Lock()
	defer i.o.mu.Unlock()
	if _, seen := i.o.updates[id]; seen {
		i.o.repeated = append(i.o.repeated, id)
	}
	i.o.updates[id] = outcome{name: in.Name, value: v, err: err}
	return v, err
}

func (i *outcomesInbound) ExecuteWorkflow(ctx workflow.Context, in *interceptor.ExecuteWorkflowInput) (any, error) {
	v, err := i.Next.ExecuteWorkflow(ctx, in)
	i.o.mu.Lock()
	defer i.o.mu.Unlock()
	i.o.closed = &outcome{value: v, err: err}
	return v, err
}

type outcomesOutbound struct {
	interceptor.WorkflowOutboundInterceptorBase
	o *outcomes
}

func (w *outcomesOutbound) SignalExternalWorkflow(ctx workflow.Context, workflowID, runID, signalName string, arg any) workflow.Future {
	w.o.mu.Lock()
	w.o.signals = append(w.o.signals, []any{arg})
	w.o.mu.Unlock()
	return w.Next.SignalExternalWorkflow(ctx, workflowID, runID, signalName, arg)
}

func (w *outcomesOutbound) ExecuteChildWorkflow(ctx workflow.Context, childWorkflowType string, args ...any) workflow.ChildWorkflowFuture {
	w.o.mu.Lock()
	w.o.children = append(w.o.children, args)
	w.o.mu.Unlock()
	return w.Next.ExecuteChildWorkflow(ctx, childWorkflowType, args...)
}

func (w *outcomesOutbound) UpsertMemo(ctx workflow.Context, memo map[string]any) error {
	w.o.mu.Lock()
	w.o.memos = append(w.o.memos, memo)
	w.o.mu.Unlock()
	return w.Next.UpsertMemo(ctx, memo)
}

// compare checks the outcomes of the replay against those hist records, and
// returns what it compared, or the first difference, naming its update or event.
func (o *outcomes) compare(hist *historypb.History) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.repeated) > 0 {
		return "", fmt.Errorf("update %q was handled twice on replay", o.repeated[0])
	}
	var errs []error
	recorded := map[string]bool{}
	var signals, children, memos int
	for _, e := range hist.GetEvents() {
		if attrs := e.GetSignalExternalWorkflowExecutionInitiatedEventAttributes(); attrs != nil {
			if err := sameArgs("signal", signals, o.signals, attrs.GetInput()); err != nil {
				errs = append(errs, fmt.Errorf("event %d (%s %q to %s): %w", e.GetEventId(), e.GetEventType(), attrs.GetSignalName(), attrs.GetWorkflowExecution().GetWorkflowId(), err))
			}
			signals++
		}
		if attrs := e.GetStartChildWorkflowExecutionInitiatedEventAttributes(); attrs != nil {
			if err := sameArgs("child", children, o.children, attrs.GetInput()); err != nil {
				errs = append(errs, fmt.Errorf("event %d (%s %s): %w", e.GetEventId(), e.GetEventType(), attrs.GetWorkflowId(), err))
			}
			children++
		}
		if attrs := e.GetWorkflowPropertiesModifiedEventAttributes(); attrs != nil {
			if err := sameMemo(memos, o.memos, attrs.GetUpsertedMemo()); err != nil {
				errs = append(errs, fmt.Errorf("event %d (%s): %w", e.GetEventId(), e.GetEventType(), err))
			}
			memos++
		}
		attrs := e.GetWorkflowExecutionUpdateCompletedEventAttributes()
		if attrs == nil {
			continue
		}
		id := attrs.GetMeta().GetUpdateId()
		recorded[id] = true
		got, ok := o.updates[id]
		if !ok {
			errs = append(errs, fmt.Errorf("update %q (completed in event %d): its handler did not run on replay", id, e.GetEventId()))
			continue
		}
		var err error
		if f := attrs.GetOutcome().GetFailure(); f != nil {
			err = sameFailure(f, got.value, got.err)
		} else {
			err = samePayloads(attrs.GetOutcome().GetSuccess(), got.value, got.err)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("update %q (%s, completed in event %d): %w", id, got.name, e.GetEventId(), err))
		}
	}
	for _, id := range sortedKeys(o.updates) {
		if !recorded[id] {
			errs = append(errs, fmt.Errorf("update %q (%s) completed on replay, but the history records no outcome for it", id, o.updates[id].name))
		}
	}
	for _, extra := range []struct {
		what             string
		recorded, replay int
	}{{"signals", signals, len(o.signals)}, {"child workflows", children, len(o.children)}, {"memo upserts", memos, len(o.memos)}} {
		if extra.replay > extra.recorded {
			errs = append(errs, fmt.Errorf("the replay sent %d %s, the history records %d", extra.replay, extra.what, extra.recorded))
		}
	}
	last := hist.GetEvents()[len(hist.GetEvents())-1]
	if err := o.compareClose(last); err != nil {
		errs = append(errs, err)
	}
	switch len(errs) {
	case 0:
		return fmt.Sprintf("%d update outcomes, the inputs of %d signals, %d child workflows and %d memo upserts, and the last event (%s)",
			len(recorded), signals, children, memos, last.GetEventType()), nil
	case 1:
		return "", errs[0]
	default:
		return "", fmt.Errorf("%w (and %d more differences)", errs[0], len(errs)-1)
	}
}

// compareClose checks how the replayed workflow function ended against the
// history's last event.
func (o *outcomes) compareClose(last *historypb.HistoryEvent) error {
	at := fmt.Sprintf("event %d (%s)", last.GetEventId(), last.GetEventType())
	switch last.GetEventType() {
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
		if o.closed == nil {
			return fmt.Errorf("%s: the workflow completed, but on replay it did not return", at)
		}
		if err := samePayloads(last.GetWorkflowExecutionCompletedEventAttributes().GetResult(), o.closed.value, o.closed.err); err != nil {
			return fmt.Errorf("%s: result: %w", at, err)
		}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
		if o.closed == nil {
			return fmt.Errorf("%s: the workflow failed, but on replay it did not return", at)
		}
		if err := sameFailure(last.GetWorkflowExecutionFailedEventAttributes().GetFailure(), o.closed.value, o.closed.err); err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
		attrs := last.GetWorkflowExecutionContinuedAsNewEventAttributes()
		var can *workflow.ContinueAsNewError
		if o.closed == nil || !errors.As(o.closed.err, &can) {
			return fmt.Errorf("%s: the workflow continued as new, but on replay it returned %s", at, describe(o.closed))
		}
		if want, got := attrs.GetWorkflowType().GetName(), can.WorkflowType.Name; want != got {
			return fmt.Errorf("%s: continued as new as workflow type %q, on replay as %q", at, want, got)
		}
		if err := samePayloads(attrs.GetInput(), can.Input, nil); err != nil {
			return fmt.Errorf("%s: continue-as-new input: %w", at, err)
		}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
		// Ended from outside: nothing the workflow decided.
	default:
		if o.closed != nil {
			return fmt.Errorf("the history ends at %s with the workflow running, but on replay it returned %s", at, describe(o.closed))
		}
	}
	return nil
}

func describe(o *outcome) string {
	switch {
	case o == nil:
		return "nothing"
	case o.err != nil:
		return fmt.Sprintf("error %v", o.err)
	default:
		return fmt.Sprintf("%+v", o.value)
	}
}

// samePayloads compares recorded payloads, as decoded JSON, with what the
// replay returned: a value (a *commonpb.Payloads is taken as encoded
// already), or an error where the history records a success.
func samePayloads(recorded *commonpb.Payloads, value any, err error) error {
	if err != nil {
		return fmt.Errorf("recorded a success, replayed error %v", err)
	}
	replayed, ok := value.(*commonpb.Payloads)
	if !ok && value != nil {
		if replayed, err = converter.GetDefaultDataConverter().ToPayloads(value); err != nil {
			return fmt.Errorf("encoding the replayed value %+v: %w", value, err)
		}
	}
	want, err := decodePayloads(recorded)
	if err != nil {
		return fmt.Errorf("decoding the recorded payload: %w", err)
	}
	got, err := decodePayloads(replayed)
	if err != nil {
		return fmt.Errorf("decoding the replayed payload: %w", err)
	}
	if len(want) == 1 && len(got) == 1 { // the usual single value: no index in the path
		if d := firstDiff("", want[0], got[0]); d != "" {
			return errors.New(d)
		}
		return nil
	}
	if d := firstDiff("", want, got); d != "" {
		return errors.New(d)
	}
	return nil
}

// sameArgs compares the recorded input of the i-th signal or child with the
// arguments the replay gave it.
func sameArgs(what string, i int, replayed [][]any, recorded *commonpb.Payloads) error {
	if i >= len(replayed) {
		return fmt.Errorf("recorded, but the replay sent no %s %d", what, i+1)
	}
	args, err := converter.GetDefaultDataConverter().ToPayloads(replayed[i]...)
	if err != nil {
		return fmt.Errorf("encoding the replayed arguments: %w", err)
	}
	if err := samePayloads(recorded, args, nil); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	return nil
}

// sameMemo compares the i-th recorded memo upsert with the replay's.
func sameMemo(i int, replayed []map[string]any, recorded *commonpb.Memo) error {
	if i >= len(replayed) {
		return fmt.Errorf("recorded, but the replay upserted no memo %d", i+1)
	}
	want, got := map[string]any{}, map[string]any{}
	for k, p := range recorded.GetFields() {
		vs, err := decodePayloads(&commonpb.Payloads{Payloads: []*commonpb.Payload{p}})
		if err != nil {
			return fmt.Errorf("decoding the recorded memo %q: %w", k, err)
		}
		want[k] = vs[0]
	}
	for k, v := range replayed[i] {
		p, err := converter.GetDefaultDataConverter().ToPayload(v)
		if err != nil {
			return fmt.Errorf("encoding the replayed memo %q: %w", k, err)
		}
		vs, err := decodePayloads(&commonpb.Payloads{Payloads: []*commonpb.Payload{p}})
		if err != nil {
			return fmt.Errorf("decoding the replayed memo %q: %w", k, err)
		}
		got[k] = vs[0]
	}
	if d := firstDiff("memo", want, got); d != "" {
		return errors.New(d)
	}
	return nil
}

// sameFailure compares a recorded failure with the error the replay returned.
func sameFailure(recorded *failurepb.Failure, value any, err error) error {
	if err == nil {
		return fmt.Errorf("recorded failure %q, replayed success %+v", recorded.GetMessage(), value)
	}
	got := temporal.GetDefaultFailureConverter().ErrorToFailure(err)
	if recorded.GetMessage() != got.GetMessage() {
		return fmt.Errorf("failure message: recorded %q, replayed %q", recorded.GetMessage(), got.GetMessage())
	}
	want, have := recorded.GetApplicationFailureInfo(), got.GetApplicationFailureInfo()
	if want.GetType() != have.GetType() || want.GetNonRetryable() != have.GetNonRetryable() {
		return fmt.Errorf("failure %q: recorded type %q (non-retryable %t), replayed %q (non-retryable %t)",
			recorded.GetMessage(), want.GetType(), want.GetNonRetryable(), have.GetType(), have.GetNonRetryable())
	}
	return nil
}

// decodePayloads decodes JSON payloads into plain values (numbers kept as
// written), so that field order and Go types do not matter.
func decodePayloads(ps *commonpb.Payloads) ([]any, error) {
	var vs []any
	for i, p := range ps.GetPayloads() {
		switch enc := string(p.GetMetadata()[converter.MetadataEncoding]); enc {
		case converter.MetadataEncodingNil:
			vs = append(vs, nil)
		case converter.MetadataEncodingJSON:
			dec := json.NewDecoder(bytes.NewReader(p.GetData()))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				return nil, fmt.Errorf("payload %d: %w", i, err)
			}
			vs = append(vs, v)
		default:
			return nil, fmt.Errorf("payload %d: encoding %q is not JSON", i, enc)
		}
	}
	return vs, nil
}

// firstDiff returns where got first differs from want, or "".
func firstDiff(path string, want, got any) string {
	here := path
	if here == "" {
		here = "value"
	}
	switch w := want.(type) {
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Sprintf("%s: recorded %s, replayed %s", here, show(want), show(got))
		}
		for i := range min(len(w), len(g)) {
			if d := firstDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); d != "" {
				return d
			}
		}
		if len(w) != len(g) {
			return fmt.Sprintf("%s: recorded %d elements, replayed %d", here, len(w), len(g))
		}
		return ""
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: recorded %s, replayed %s", here, show(want), show(got))
		}
		keys := sortedKeys(w)
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			wv, inW := w[k]
			gv, inG := g[k]
			switch {
			case !inG:
				return fmt.Sprintf("%s: recorded %s, replayed (absent)", p, show(wv))
			case !inW:
				return fmt.Sprintf("%s: recorded (absent), replayed %s", p, show(gv))
			}
			if d := firstDiff(p, wv, gv); d != "" {
				return d
			}
		}
		return ""
	default:
		if want != got {
			return fmt.Sprintf("%s: recorded %s, replayed %s", here, show(want), show(got))
		}
		return ""
	}
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
