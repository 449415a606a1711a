package config

// The raw structs mirror the TOML file. They are decoded strictly (unknown
// keys are errors) and then converted to the typed Config. Pointer fields
// distinguish "unset" (take the default) from a value that equals the zero
// value. Marshal fills the same structs, leaving defaults nil, so the field
// order here is the order of keys in written files.

// rawFile is the whole file.
type rawFile struct {
	Debug   int                 `toml:"debug,omitempty"`
	Network *rawNetwork         `toml:"network,omitempty"`
	Control *rawControl         `toml:"control,omitempty"`
	ACL     map[string][]string `toml:"acl,omitempty"`
	Dummy   []rawDummy          `toml:"dummy,omitempty"`
	Service []rawService        `toml:"service,omitempty"`
}

// rawControl is [control].
type rawControl struct {
	PenListen string `toml:"pen_listen,omitempty"`
	PenACL    string `toml:"pen_acl,omitempty"`
	AllowExit bool   `toml:"allow_exit,omitempty"`
	Listen    string `toml:"listen,omitempty"`
	ACL       string `toml:"acl,omitempty"`
}

// rawDummy is one [[dummy]].
type rawDummy struct {
	Listen string `toml:"listen"`
	Body   string `toml:"body"`
}

// rawService is one [[service]].
type rawService struct {
	Name     string  `toml:"name"`
	Listen   string  `toml:"listen"`
	Protocol *string `toml:"protocol"`

	Mode      *string `toml:"mode,omitempty"`
	Interface string  `toml:"interface,omitempty"`
	TarpitACL string  `toml:"tarpit_acl,omitempty"`

	Algorithm      *string `toml:"algorithm,omitempty"`
	Tracking       *bool   `toml:"tracking,omitempty"`
	TrackingExpiry *string `toml:"tracking_expiry,omitempty"`
	TrackingSize   *int    `toml:"tracking_size,omitempty"`
	HashPort       bool    `toml:"hash_port,omitempty"`
	Stubborn       bool    `toml:"stubborn,omitempty"`

	Blacklist      *string `toml:"blacklist,omitempty"`
	ConnectTimeout *string `toml:"connect_timeout,omitempty"`
	IdleTimeout    *string `toml:"idle_timeout,omitempty"`
	MaxConnections *int    `toml:"max_connections,omitempty"`

	Emergency string `toml:"emergency,omitempty"`
	Abuse     string `toml:"abuse,omitempty"`
	ClientACL string `toml:"client_acl,omitempty"`

	HTTP          bool   `toml:"http,omitempty"`
	ProxyProtocol string `toml:"proxy_protocol,omitempty"`
	Source        string `toml:"source,omitempty"`
	NoDelay       bool   `toml:"nodelay,omitempty"`
	KeepAlive     bool   `toml:"keepalive,omitempty"`
	Backlog       *int   `toml:"backlog,omitempty"`
	Log           string `toml:"log,omitempty"`
	WebStats      string `toml:"web_stats,omitempty"`

	TLS     *rawTLS      `toml:"tls,omitempty"`
	Health  *rawHealth   `toml:"health,omitempty"`
	Backend []rawBackend `toml:"backend,omitempty"`
}

// rawBackend is one [[service.backend]].
type rawBackend struct {
	Address string `toml:"address"`
	Max     int    `toml:"max,omitempty"`
	Hard    int    `toml:"hard,omitempty"`
	Weight  *int   `toml:"weight,omitempty"`
	Prio    int    `toml:"prio,omitempty"`
	ACL     string `toml:"acl,omitempty"`
	Drain   bool   `toml:"drain,omitempty"`
}

// rawTLS is [service.tls].
type rawTLS struct {
	Cert       string   `toml:"cert"`
	Key        string   `toml:"key,omitempty"`
	Chain      string   `toml:"chain,omitempty"`
	MinVersion *string  `toml:"min_version,omitempty"`
	Ciphers    []string `toml:"ciphers,omitempty"`
	SNIDir     string   `toml:"sni_dir,omitempty"`
	OCSPStaple string   `toml:"ocsp_staple,omitempty"`
	ClientCA   string   `toml:"client_ca,omitempty"`
	ClientAuth *string  `toml:"client_auth,omitempty"`
}
