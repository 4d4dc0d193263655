"""PerProcessHandle: one resource per process, reopened after fork, never pickled."""

import functools
import multiprocessing
import os
import pickle


class Resource:
    opened = 0

    def __init__(self, tag):
        Resource.opened += 1
        self.tag = tag
        self.pid = os.getpid()
        self.closed = False

    def close(self):
        self.closed = True


def _child_pid(handle, queue):
    queue.put((handle.get().pid, os.getpid()))


def test_opens_once_per_process_and_drops_on_pickle():
    from physnet.datasets._handles import PerProcessHandle

    handle = PerProcessHandle(functools.partial(Resource, "a"))
    first = handle.get()
    assert handle.get() is first and first.pid == os.getpid()
    clone = pickle.loads(pickle.dumps(handle))
    assert clone._resource is None
    assert clone.get() is not first and clone.get().tag == "a"
    handle.close()
    assert first.closed and handle._resource is None


def test_reopens_after_fork():
    from physnet.datasets._handles import PerProcessHandle

    handle = PerProcessHandle(functools.partial(Resource, "b"))
    parent = handle.get()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_child_pid, args=(handle, queue))
    process.start()
    resource_pid, child_pid = queue.get(timeout=30)
    process.join(timeout=30)
    assert resource_pid == child_pid != os.getpid()
    assert not parent.closed  # the child never closes the parent's handle
