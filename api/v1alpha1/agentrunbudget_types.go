package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// MaxBudgetEntries bounds an AgentRunBudget's ledger (status.entries). When
// the window holds more runs, the fleet merges the oldest settled entries
// into one, dated by the later of them: the merged cost leaves the window a
// little later than it would have, never earlier.
const MaxBudgetEntries = 256

// Condition types and reasons of an AgentRunBudget.
const (
	// BudgetConditionExhausted is True when what is left of the budget
	// (maxCostUSD less what was spent and reserved, or maxRuns less the
	// runs counted) cannot take one more run with the budget's default cap;
	// False otherwise.
	BudgetConditionExhausted = "Exhausted"
	// ReasonBudgetAvailable: the budget can take more runs.
	ReasonBudgetAvailable = "Available"
	// ReasonBudgetSpent: the budget's cost or run count is used up until
	// entries leave the window.
	ReasonBudgetSpent = "Spent"
)

// Window End is a string column, the timestamp: kubectl prints a date
// column as the time since, and a future time as <invalid>.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=arb,categories=agents
// +kubebuilder:printcolumn:name="Spent",type=string,JSONPath=`.status.spentUSD`
// +kubebuilder:printcolumn:name="Reserved",type=string,JSONPath=`.status.reservedUSD`
// +kubebuilder:printcolumn:name="Limit",type=string,JSONPath=`.spec.maxCostUSD`
// +kubebuilder:printcolumn:name="Runs",type=integer,JSONPath=`.status.runs`
// +kubebuilder:printcolumn:name="Window",type=string,JSONPath=`.spec.window`,priority=1
// +kubebuilder:printcolumn:name="Window End",type=string,JSONPath=`.status.nextReleaseTime`,description="When the window's oldest entry leaves it"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// AgentRunBudget is a ceiling on what the AgentRuns of its namespace (those
// its selector matches) may spend, and how many may start, within a rolling
// window. Each run reserves its cap before a host is given it, and starts
// only when that reservation fits what is left; when it finishes, the cost
// it reported replaces the reservation. The fleet keeps the ledger in the
// status; nothing else writes it.
type AgentRunBudget struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AgentRunBudgetSpec `json:"spec"`
	// +optional
	Status AgentRunBudgetStatus `json:"status,omitempty"`
}

// AgentRunBudgetSpec is a budget's ceiling.
// +kubebuilder:validation:XValidation:rule="!has(self.defaultRunCapUSD) || !has(self.maxCostUSD) || double(self.defaultRunCapUSD) <= double(self.maxCostUSD)",message="defaultRunCapUSD must not exceed maxCostUSD (rule: cap within budget)"
type AgentRunBudgetSpec struct {
	// Window is how far back the budget counts, a rolling window such as
	// "24h" or "168h" (a Go duration of at least one minute and at most 31
	// days): a run counts from the moment it reserved until Window later.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(h|m|s))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(h|m|s))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('744h'))",message="window must be between 1m and 744h (31 days) (rule: budget window)"
	Window metav1.Duration `json:"window"`

	// MaxCostUSD is the most the window's runs may cost together, in US
	// dollars, as a decimal string such as "50" or "0.05": spent (the costs
	// finished runs reported) plus reserved (the caps of running ones).
	// +required
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^[0-9]+([.][0-9]{1,6})?$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^0*([.]0*)?$')",message="maxCostUSD must be more than 0 (rule: positive budget)"
	MaxCostUSD string `json:"maxCostUSD"`

	// MaxRuns, when set, is how many runs may start in the window, whether
	// or not they report a cost.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	MaxRuns *int32 `json:"maxRuns,omitempty"`

	// Selector picks the namespace's runs the budget counts, by label; none
	// means every run of the namespace. A run several budgets select must
	// fit in each. (The fleet reads a selector it cannot parse as selecting
	// every run: a budget never stops holding through a typo.)
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? has(e.values) && size(e.values) > 0 : e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0))",message="each selector expression's operator must be In or NotIn with values, or Exists or DoesNotExist without (rule: budget selector)"
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// DefaultRunCapUSD is the cap of a run that sets no
	// spec.claude.maxBudgetUSD: it is what the run reserves, and what its
	// host passes to Claude Code (--max-budget-usd). Without it, such a run
	// cannot start under this budget (it would have no bound to reserve).
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^[0-9]+([.][0-9]{1,6})?$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^0*([.]0*)?$')",message="defaultRunCapUSD must be more than 0 (rule: positive budget)"
	DefaultRunCapUSD string `json:"defaultRunCapUSD,omitempty"`
}

// AgentRunBudgetStatus is the budget's ledger over its window, as the fleet
// last wrote it.
type AgentRunBudgetStatus struct {
	// ObservedGeneration is the spec generation the status was computed
	// from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// SpentUSD is what the window's finished runs reported they cost.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	SpentUSD string `json:"spentUSD,omitempty"`

	// ReservedUSD is the caps of the window's runs that have not finished.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ReservedUSD string `json:"reservedUSD,omitempty"`

	// Runs is how many runs the window counts.
	// +optional
	Runs int32 `json:"runs,omitempty"`

	// NextReleaseTime is when the window's oldest entry leaves it, freeing
	// what it counted; unset when the window is empty.
	// +optional
	NextReleaseTime *metav1.Time `json:"nextReleaseTime,omitempty"`

	// Entries is the ledger: one entry per run the window counts, oldest
	// first, at most MaxBudgetEntries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	Entries []BudgetEntry `json:"entries,omitempty"`

	// Conditions: Exhausted.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BudgetEntry is what runs counted in a budget's window: one run, or, once
// the ledger is full, several settled runs merged.
type BudgetEntry struct {
	// RunUID is the run's UID: a run reserves once, whichever host runs
	// it. Empty for merged entries.
	// +optional
	RunUID types.UID `json:"runUID,omitempty"`

	// RunName is the run's name, for a person reading the ledger.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RunName string `json:"runName,omitempty"`

	// Time is when the entry started counting (the run's reservation); it
	// leaves the window Window later.
	// +required
	Time metav1.Time `json:"time"`

	// CostUSD is the run's reserved cap while Final is false, and the cost
	// it reported (0 when it reported none) once it is true.
	// +required
	// +kubebuilder:validation:MaxLength=32
	CostUSD string `json:"costUSD"`

	// Final tells whether CostUSD is the reported cost rather than a
	// reservation.
	// +optional
	Final bool `json:"final,omitempty"`

	// Runs is how many runs the entry counts: 1, more for merged entries.
	// +required
	// +kubebuilder:validation:Minimum=1
	Runs int32 `json:"runs"`
}

// +kubebuilder:object:root=true

// AgentRunBudgetList is a list of AgentRunBudgets.
type AgentRunBudgetList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentRunBudget `json:"items"`
}

// RunBudget is what an AgentRun reserved under its namespace's
// AgentRunBudgets, written by the fleet before a host may take the run.
type RunBudget struct {
	// Budgets are the AgentRunBudgets the run reserved in (none when none
	// selects it).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	Budgets []string `json:"budgets,omitempty"`

	// ReservedUSD is the cap the run reserved in each of them.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ReservedUSD string `json:"reservedUSD,omitempty"`

	// CapUSD, when set, is the cap the host passes to Claude Code
	// (--max-budget-usd) because the run sets no spec.claude.maxBudgetUSD:
	// the smallest defaultRunCapUSD of its budgets.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	CapUSD string `json:"capUSD,omitempty"`
}
