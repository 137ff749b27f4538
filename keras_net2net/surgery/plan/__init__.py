"""Planning: how a widen or deepen request becomes a list of changes.

Planning reads the model's graph and decides every change (new widths, weight
transforms, inserted layers) without touching the model; all validation
happens here. `keras_net2net.surgery.apply` then builds the grown model.

* `graph_plan`: `Plan`, what planning hands to building (`Plan.build`).
* `data`: `Insertion` and `Call`, the new layers a plan inserts.
* `widen`: `plan_widen`, a coupling group widened with one mapping.
* `deepen`: `plan_deepen`, an identity layer or a zero residual branch.
* `blocks`: copies of whole residual blocks (``deepen(after=<an Add>)``).
* `stack`: `plan_stack`, a residual stack repeated (`keras_net2net.Stack`).
"""

from keras_net2net.surgery.plan.data import Insertion
from keras_net2net.surgery.plan.deepen import plan_deepen
from keras_net2net.surgery.plan.graph_plan import Plan
from keras_net2net.surgery.plan.stack import plan_stack
from keras_net2net.surgery.plan.widen import plan_widen

__all__ = ["Insertion", "Plan", "plan_deepen", "plan_stack", "plan_widen"]
