"""Runtime helpers that read neither the options nor the run: processes, signals, logs, progress, drawing."""
