"""What differs between the experiments that train a classifier: data, on-device
preparation, loss and errors, evaluation.

Each module here registers the task of its name: ``distorted_mnist``, ``mnist_addition``,
``svhn`` and ``cub``. A task that trains something else (co-localisation) lives in a
package of its own and names its own trainer. :func:`make_task` finds a task by the
config's ``task`` field, importing its module on first use.
"""

from stn_jax.tasks.base import (TASKS, Task, find_task_class, make_task, register,
                                softmax_errors, task_class)

__all__ = ["TASKS", "Task", "find_task_class", "make_task", "register", "softmax_errors",
           "task_class"]
