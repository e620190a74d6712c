package v1alpha1

// Condition types of an AgentRun. Every condition carries the run's
// metadata.generation as its observedGeneration.
const (
	// ConditionScheduled is True once a Podman host has taken the run
	// (status.host is set) and False while no host has.
	ConditionScheduled = "Scheduled"

	// ConditionStarted is True once the current attempt's container was
	// started, and False while it cannot start yet; its reason then says what
	// it waits for (SecretNotFound, ImageNotFound, PodmanUnavailable, ...).
	ConditionStarted = "Started"

	// ConditionSucceeded is True when the run finished successfully: the
	// container exited 0 and the agent reported no error. It is False once
	// the run finished any other way.
	ConditionSucceeded = "Succeeded"

	// ConditionFailed is True when the run finished without success (failed,
	// deadline exceeded or cancelled); its reason says which. It is False
	// while the run has not failed.
	ConditionFailed = "Failed"

	// ConditionFinished is True once the run reached a terminal phase,
	// whichever it is, so `kubectl wait --for=condition=Finished` waits for
	// any outcome.
	ConditionFinished = "Finished"

	// ConditionPodmanAvailable is True when the Podman API of the run's host
	// answered the controller's last call for this run, and False (reason
	// PodmanUnavailable) when it did not; the controller keeps retrying.
	ConditionPodmanAvailable = "PodmanAvailable"

	// ConditionHostLost is True when the run's host stopped renewing its
	// heartbeat while the run was unfinished, as a Pod's DisruptionTarget
	// condition says its node went away. An unpinned run is placed again on
	// another host, in an attempt that does not count against
	// spec.backoffLimit; a pinned run fails with reason HostLost. It stays
	// True for the rest of the run's life, as a record of the disruption.
	ConditionHostLost = "HostLost"

	// ConditionNotified is True once the host delivered the finished run's
	// status to spec.notify.url (the receiver answered 2xx), and False
	// (reason NotifyFailed) once it gave up; the message has the HTTP status
	// or the class of the last failure (timeout, connection refused, TLS
	// error, destination not allowed, ...), never Go's error text, and the
	// receiver's scheme and host, never the rest of its URL. Runs without
	// spec.notify do not have it.
	ConditionNotified = "Notified"

	// ConditionReady, ConditionReconciling and ConditionStalled are the
	// conditions kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) reads, so that
	// Flux's health checks, `kubectl wait --for=condition=Ready` and other
	// GitOps tools see a run as in progress until it ends:
	//   - Ready is True once the run succeeded, and False before and on
	//     any other outcome, with the run's reason;
	//   - Reconciling is True while the run has not finished (its reason
	//     says what it is doing or waiting for), False once it has;
	//   - Stalled is True when the run finished without success (failed,
	//     deadline exceeded, cancelled), with that reason: kstatus then
	//     reports Failed rather than waiting for ever.
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Condition reasons, CamelCase as Kubernetes reasons are. The same words are
// used as event reasons.
const (
	// ReasonWaitingForHost: no Podman host has claimed the run yet.
	ReasonWaitingForHost = "WaitingForHost"
	// ReasonClaimed: a host claimed the run.
	ReasonClaimed = "Claimed"
	// ReasonSecretNotFound: a secret named in spec.podman.secretsEnv does not
	// exist on the host; the run starts once it is created.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonImageNotFound: the image is not present on the host.
	ReasonImageNotFound = "ImageNotFound"
	// ReasonPodmanUnavailable: the host's Podman API service did not answer.
	ReasonPodmanUnavailable = "PodmanUnavailable"
	// ReasonPodmanAvailable: the host's Podman API answers.
	ReasonPodmanAvailable = "PodmanAvailable"
	// ReasonWaitingForCapacity: the host runs as many runs as it may (a
	// pinned run), or every host that could run the unpinned run does; the
	// run starts, in creation order, when a slot frees.
	ReasonWaitingForCapacity = "WaitingForCapacity"
	// ReasonVolumeNotAllowed: a volume's host path is outside the host's
	// allowlist, is or holds a path no run may mount, goes through a
	// symlink, or uses an option the host refuses; or its container path is
	// on the blocklist.
	ReasonVolumeNotAllowed = "VolumeNotAllowed"
	// ReasonImageNotAllowed: the image matches none of the host's allowed
	// patterns.
	ReasonImageNotAllowed = "ImageNotAllowed"
	// ReasonResourcesNotAllowed: the run asks for more memory or CPUs than
	// the host allows.
	ReasonResourcesNotAllowed = "ResourcesNotAllowed"
	// ReasonNetworkNotAllowed: the run asks for a network (host, say) the
	// host does not list among those runs may use.
	ReasonNetworkNotAllowed = "NetworkNotAllowed"
	// ReasonEgressNotPermitted: the run asks to reach names beyond its
	// host's egress ceiling (host.egress.permitted and host.egress.default).
	ReasonEgressNotPermitted = "EgressNotPermitted"
	// ReasonEgressUnavailable: the run's egress proxy could not be started,
	// or its forwarder found no proxy (the container exits 121).
	ReasonEgressUnavailable = "EgressUnavailable"
	// ReasonEgressDenied: the run's proxy refused a connection (an event,
	// rate-limited).
	ReasonEgressDenied = "EgressDenied"
	// ReasonCredentialRejected: a host the proxy added a credential to
	// answered 401 or 403 (an event): the secret's token is likely expired
	// or revoked.
	ReasonCredentialRejected = "CredentialRejected"
	// ReasonBackOff: an attempt failed and the next one starts after a
	// backoff.
	ReasonBackOff = "BackOff"
	// ReasonBackoffLimitExceeded: the last allowed attempt failed.
	ReasonBackoffLimitExceeded = "BackoffLimitExceeded"
	// ReasonDeadlineExceeded: the attempt outlived spec.timeout and was
	// stopped.
	ReasonDeadlineExceeded = "DeadlineExceeded"
	// ReasonCancelled: spec.cancel was set; the message says by which client.
	ReasonCancelled = "Cancelled"
	// ReasonAgentError: the agent's JSON result reported an error.
	ReasonAgentError = "AgentError"
	// ReasonLaunchFailed: Podman refused to create or start the container.
	ReasonLaunchFailed = "LaunchFailed"
	// ReasonLaunched: the container was created and started, and runs.
	ReasonLaunched = "Launched"
	// ReasonCompleted: the container exited 0.
	ReasonCompleted = "Completed"
	// ReasonExitedNonZero: the container exited with a non-zero code.
	ReasonExitedNonZero = "ExitedNonZero"
	// ReasonContainerLost: the container disappeared before its result was
	// recorded.
	ReasonContainerLost = "ContainerLost"
	// ReasonUnschedulable: no Podman host can take the unpinned run now; the
	// message names, per host, what it lacks (a secret, the image, a label,
	// a free slot, a heartbeat). The run starts when a host gains it.
	ReasonUnschedulable = "Unschedulable"
	// ReasonBudgetExceeded: the run's cap does not fit what is left of an
	// AgentRunBudget that selects it (or its maxRuns are used up); the
	// run waits Pending and starts when entries leave the budget's window.
	// The message says how much is left and when enough frees.
	ReasonBudgetExceeded = "BudgetExceeded"
	// ReasonHostLost: the run's host stopped renewing its heartbeat.
	ReasonHostLost = "HostLost"
	// ReasonAlreadyRan: an AgentRun of the same namespace, name and manifest
	// ran before and was deleted; its AgentRunRecord says how it ended, and
	// this run ends the same way without launching anything.
	ReasonAlreadyRan = "AlreadyRan"
	// ReasonDelivered: the receiver of spec.notify accepted the callback.
	ReasonDelivered = "Delivered"
	// ReasonNotifyFailed: every try to deliver the callback failed.
	ReasonNotifyFailed = "NotifyFailed"
	// ReasonWaitingForSession: the run continues the session of a run that
	// has not finished yet; it starts once that run has.
	ReasonWaitingForSession = "WaitingForSession"
	// ReasonSessionUnavailable: the session the run continues cannot be
	// had: the earlier run does not exist, has no Claude session, or its
	// host no longer keeps it.
	ReasonSessionUnavailable = "SessionUnavailable"
	// ReasonSessionTooLarge: the transcripts of the session the run
	// continues pass the host's limits for a copy (its
	// host.sessions.copyMaxBytes and host.sessions.copyMaxFiles).
	ReasonSessionTooLarge = "SessionTooLarge"
	// ReasonNotFinished: the run has not reached a terminal phase.
	ReasonNotFinished = "NotFinished"
)
