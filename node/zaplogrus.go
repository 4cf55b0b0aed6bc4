package node

import (
	"strings"

	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger that writes into log at or above level.
// etcd's embedded member and client log through zap; routing them here keeps
// one format, one destination and one switch for the operator (a default
// three-member start prints hundreds of zap lines otherwise).
func newZapLogger(log *logrus.Entry, level zapcore.Level) *zap.Logger {
	return zap.New(&logrusCore{LevelEnabler: level, log: log})
}

// logrusCore is a zapcore.Core that forwards entries to logrus.
type logrusCore struct {
	zapcore.LevelEnabler
	log    *logrus.Entry
	fields []zapcore.Field
}

var _ zapcore.Core = (*logrusCore)(nil)

func (c *logrusCore) With(fields []zapcore.Field) zapcore.Core {
	return &logrusCore{LevelEnabler: c.LevelEnabler, log: c.log,
		fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c *logrusCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *logrusCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	e := c.log.WithFields(logrus.Fields(enc.Fields))
	if ent.LoggerName != "" {
		e = e.WithField("logger", ent.LoggerName)
	}
	level := logrusLevel(ent.Level)
	if shutdownNoise(enc.Fields) {
		level = logrus.DebugLevel
	}
	e.Log(level, ent.Message)
	return nil
}

// shutdownNoise reports an entry that only says a listener was closed:
// etcd logs those at error level on every clean stop.
func shutdownNoise(fields map[string]any) bool {
	msg, ok := fields["error"].(string)
	return ok && (strings.HasSuffix(msg, "use of closed network connection") ||
		msg == "http: Server closed" || msg == "grpc: the server has been stopped" || msg == "mux: server closed")
}

func (c *logrusCore) Sync() error { return nil }

// logrusLevel maps zap levels to logrus ones. Panic and fatal map to error:
// zap itself panics or exits after writing, logrus must not do it twice.
func logrusLevel(l zapcore.Level) logrus.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return logrus.DebugLevel
	case l == zapcore.InfoLevel:
		return logrus.InfoLevel
	case l == zapcore.WarnLevel:
		return logrus.WarnLevel
	}
	return logrus.ErrorLevel
}
