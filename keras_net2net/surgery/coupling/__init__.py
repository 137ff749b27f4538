"""Coupling groups: every layer that shares one channel axis.

Widening a layer widens a channel axis, and every operation that shares that
axis must change with it, under one mapping ``g`` (new channel -> old
channel). The group is found by a walk of the graph (`walk.find_group`),
starting at the widened layer's output tensor:

* its *core* tensors share the axis exactly. Crossing a pass-through
  (activation, BatchNormalization, pooling, ...) keeps a tensor in the core,
  in both directions; a merge (Add, Multiply, ``x + y``, ...) puts all its
  inputs and its output in the core, so a residual stream is one group.
* *writers* (Dense, Conv, ...) produce core tensors: their output units are
  copied by ``g``. Every core tensor ends, upstream, at writers.
* *readers* (Dense, Conv, ...) consume group tensors: the incoming weights of
  copied channels are divided by their replication count.
* *layouts* (Flatten, channel Concatenate, depthwise convolutions with a depth
  multiplier) derive new index layouts from core tensors, crossed forwards
  only; their outputs are *derived* tensors that reach readers the same way.
* *splits* (a Reshape of a Dense's units into ``(positions, channels)``) are
  the one layout crossed backwards: their input is a derived tensor, written
  by a writer (through per-channel layers) in that layout.

Every derived tensor keeps the `Edge` it was reached by: the node crossed and
how it carries the mapping (the same, a derived layout, a split), so the
mapping of every group tensor follows from the core's
(`ChannelGroup.mappings`), as Torch-Pruning's dependency edges carry index
mappings.

Anything else on the way (an unsupported operation, a model input or output, a
shared layer with weights) makes the widening impossible, and the error names
it before anything changes.

Modules: `group` (what a walk finds: `ChannelGroup`, `Edge`), `walk` (the
walk), `axes` (where a node's channels are; a units layer whose units a
Reshape splits into channels).
"""

from keras_net2net.surgery.coupling.axes import output_axis
from keras_net2net.surgery.coupling.axes import split_below
from keras_net2net.surgery.coupling.group import ChannelGroup
from keras_net2net.surgery.coupling.group import Edge
from keras_net2net.surgery.coupling.walk import find_group

__all__ = ["ChannelGroup", "Edge", "find_group", "output_axis", "split_below"]
