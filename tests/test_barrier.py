"""The start barrier's files: agents say they are ready, the runner releases them all at once."""

import threading
import time

from common.barrier import announce_ready, ready_nodes, release, wait_for_start


def test_agents_wait_until_the_runner_releases_them_and_learn_the_same_start(tmp_path):
    assert ready_nodes(tmp_path) == set()
    starts = []
    waiting = [threading.Thread(target=lambda n=n: (announce_ready(tmp_path, n),
                                                    starts.append(wait_for_start(tmp_path, 5.0))))
               for n in ("d1h1", "d1h2")]
    for thread in waiting:
        thread.start()
    while ready_nodes(tmp_path) != {"d1h1", "d1h2"}:
        time.sleep(0.01)
    assert starts == []  # ready, and still waiting
    release(tmp_path, 1234.5, absent=["d2h1"])
    for thread in waiting:
        thread.join(2.0)
    assert starts == [1234.5, 1234.5]


def test_without_a_release_an_agent_gives_up(tmp_path):
    assert wait_for_start(tmp_path, 0.2) is None
