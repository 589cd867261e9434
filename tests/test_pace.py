from sdfl.pace import duration, pace


def test_the_remaining_time_follows_the_pace_so_far():
    assert pace(5, 20, 30.0) == "30 s, about 1 min 30 s left"
    assert pace(0, 20, 4.2) == "4 s" and pace(20, 20, 65) == "1 min 05 s, done"
    assert duration(7322) == "2 h 02 min"
