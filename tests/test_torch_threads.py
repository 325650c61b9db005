"""gramcast.torch_threads in a fresh process (it changes torch's threads for good): the torch thread gets
every intra-op thread, the calling thread and threads started later get one, calls run there and back."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import threading, torch
    from gramcast.torch_threads import on_torch_thread, torch_thread_active, use_one_torch_thread
    assert not torch_thread_active() and on_torch_thread(threading.current_thread) is threading.current_thread()
    use_one_torch_thread(threads=3)
    use_one_torch_thread(threads=2)                          # idempotent: the first call decides
    later = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads())); t.start(); t.join()
    name = on_torch_thread(lambda: threading.current_thread().name)
    nested = on_torch_thread(lambda: on_torch_thread(lambda: threading.current_thread().name))  # runs inline
    try:
        on_torch_thread(lambda: 1 / 0)
        raised = False
    except ZeroDivisionError:
        raised = True
    x = torch.arange(1_000_000)                              # int64: exact whatever the split
    total = on_torch_thread(lambda v: int(v.sum()), x)
    print(torch.get_num_threads(), on_torch_thread(torch.get_num_threads), later[0], name, nested == name, raised,
          total == float(x.sum()))
""")


def test_one_torch_thread_takes_the_threads_and_the_rest_get_one():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    main, torch_thread, later, name, nested_inline, raised, same_sum = out.stdout.split()
    assert (main, torch_thread, later) == ("1", "3", "1")
    assert name.startswith("gramcast-torch")
    assert nested_inline == raised == same_sum == "True"
