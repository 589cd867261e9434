"""The resource sampler on real processes (no network needed)."""

import subprocess
import sys
import time

from sdfl.resources import ResourceSampler, role_class


def test_cpu_and_peak_memory_are_attributed_to_roles_and_kept_after_a_process_ends():
    burner = subprocess.Popen([sys.executable, "-c",
                               "import time\nx = bytearray(80 * 1024 * 1024)\nt = time.process_time()\n"
                               "while time.process_time() - t < 0.6: pass\nprint('burnt', flush=True)\n"
                               "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    idle = subprocess.Popen(["sleep", "5"])
    try:
        processes = [(burner.pid, "agent d1h1"), (idle.pid, "controller d1")]
        with ResourceSampler(lambda: processes, interval_s=0.1) as sampler:
            assert burner.stdout.readline() == "burnt\n"  # however busy the machine is
            time.sleep(0.3)  # a sample sees it after the burn
            burner.kill()
            burner.wait()
            time.sleep(0.3)
        report = sampler.report()
    finally:
        idle.kill()
        burner.kill()
    assert report["cpu_s_by_role"]["agent"] >= 0.5 and report["cpu_s_by_role"]["controller"] < 0.1
    assert report["peak_pss_mb_by_role"]["agent"] >= 80 and report["peak_pss_mb_total"] >= 80
    assert report["samples"] >= 10 and report["cpu_cores"] >= 1


def test_roles_are_the_first_word():
    assert [role_class(r) for r in ("agent d1h2", "mininet shell c1", "")] == ["agent", "mininet", "other"]
