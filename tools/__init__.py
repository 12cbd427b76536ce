"""Library of the command-line scripts: options, training engine, one epoch of a phase, evaluators,
checkpoints, mining glue, drawing, inference, learning curves, labelling round trips, torchrun."""
