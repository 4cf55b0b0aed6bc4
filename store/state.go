package store

// HealthState is a server's health as a replica sees it: the leader's
// verdict for the address registered now, if there is one. It is the state
// field of /v1/servers and /v1/fleet.
type HealthState string

// Health states.
const (
	// HealthUp: the leader's last probe of the registered address passed.
	HealthUp HealthState = "up"
	// HealthDown: the leader's last probe of the registered address failed.
	HealthDown HealthState = "down"
	// HealthUnknown: no verdict for the registered address yet (a new
	// server, a changed address, or no valid address).
	HealthUnknown HealthState = "unknown"
)

// ReportState says whether a server's load report is in use. It is the
// report field of /v1/servers and /v1/fleet.
type ReportState string

// Report states.
const (
	// ReportNone: the server has no load report (no status URL, or the
	// last pull failed).
	ReportNone ReportState = "none"
	// ReportFresh: the report is in use: its load steers effective weights.
	ReportFresh ReportState = "fresh"
	// ReportExpired: the report is older than its expiry and ignored; the
	// server runs on its static weight.
	ReportExpired ReportState = "expired"
)
