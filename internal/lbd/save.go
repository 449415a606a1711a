package lbd

import (
	"errors"

	"github.com/nib-lb/nib/config"
)

// Saving the running config (the control API's write and Pen's write
// verb). lbd adds its -d count to the debug level of every config it loads;
// a saved file says what the loaded file would have said, so the boost does
// not grow with each write and restart. In appliance mode the saved file,
// which is the running config, also becomes the last good one.

// applyLoaded applies cfg, loaded from config name, with the -d count
// added to its debug level. An error is an *applyError: the config was
// valid but could not be applied.
func (d *Daemon) applyLoaded(name string, cfg *config.Config) error {
	cfg.Debug = min(cfg.Debug+d.DebugBoost, maxDebug)
	if err := d.Apply(cfg); err != nil {
		return &applyError{name, err}
	}
	return nil
}

// saveTOML saves cfg, without the -d boost, atomically to the -config file.
func (d *Daemon) saveTOML(cfg *config.Config) error {
	if d.TOMLFile == "" {
		return errors.New("lbd has no -config file to write")
	}
	c := cfg.Clone()
	c.Debug = max(c.Debug-d.DebugBoost, 0)
	data, err := config.Save(d.TOMLFile, c)
	if err != nil {
		return err
	}
	if d.saved != nil {
		// The main loop keeps it as last-good; only the latest matters.
		select {
		case <-d.saved:
		default:
		}
		d.saved <- data
	}
	return nil
}
