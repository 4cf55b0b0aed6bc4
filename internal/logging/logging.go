// Package logging holds the dispatcher's one convention for an absent
// logger: constructors take a *logrus.Entry and a nil one means "log
// nothing", never a panic and never the global logger.
package logging

import (
	"io"

	"github.com/sirupsen/logrus"
)

// OrDiscard returns log, or an entry that drops everything if log is nil.
func OrDiscard(log *logrus.Entry) *logrus.Entry {
	if log != nil {
		return log
	}
	return Discard()
}

// Discard returns an entry that drops everything, without formatting it.
func Discard() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}
