import numpy as np
import pytest

from keras_net2net import transforms as T


def test_random_mapping_keeps_old_units_and_copies_valid_ones():
    mapping = T.random_mapping(5, 12, seed=0)
    assert mapping.new_width == 12 and mapping.old_width == 5
    np.testing.assert_array_equal(mapping.indices[:5], np.arange(5))
    assert mapping.indices[5:].min() >= 0 and mapping.indices[5:].max() < 5
    assert mapping.counts.sum() == 12
    np.testing.assert_array_equal(
        mapping.indices, T.random_mapping(5, 12, seed=0).indices
    )


def test_padding_mapping_marks_fresh_units():
    mapping = T.padding_mapping(3, 5)
    np.testing.assert_array_equal(mapping.indices, [0, 1, 2, -1, -1])
    np.testing.assert_array_equal(mapping.fresh, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(mapping.counts, [1, 1, 1])


@pytest.mark.parametrize("new", [3, 2])
def test_mapping_rejects_non_larger_width(new):
    with pytest.raises(ValueError, match="larger"):
        T.random_mapping(3, new)


def test_mapping_rejects_bad_indices():
    with pytest.raises(ValueError, match=r"\[-1, old_width\)"):
        T.WidthMapping(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="1-D integer"):
        T.WidthMapping(np.array([0.5]), 3)


def test_wider_out_copies_columns_and_wider_in_divides_rows(rng):
    w1 = rng.normal(size=(4, 3))
    b1 = rng.normal(size=3)
    w2 = rng.normal(size=(3, 2))
    mapping = T.WidthMapping(np.array([0, 1, 2, 1, 1]), 3)
    w1n = T.wider_out(w1, mapping)
    b1n = T.wider_out(b1, mapping)
    w2n = T.wider_in(w2, mapping)
    np.testing.assert_array_equal(w1n[:, 3], w1[:, 1])
    np.testing.assert_allclose(w2n[1], w2[1] / 3)
    np.testing.assert_allclose(w2n[3], w2[1] / 3)
    np.testing.assert_allclose(w2n[0], w2[0])
    x = rng.normal(size=(7, 4))
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    np.testing.assert_allclose(
        relu(x @ w1 + b1) @ w2, relu(x @ w1n + b1n) @ w2n, atol=1e-12
    )


def test_wider_in_power_two_for_squared_state(rng):
    v = rng.uniform(size=(3, 2))
    mapping = T.WidthMapping(np.array([0, 1, 2, 2]), 3)
    out = T.wider_in(v, mapping, power=2)
    np.testing.assert_allclose(out[2], v[2] / 4)
    np.testing.assert_allclose(out[0], v[0])


def test_conv_kernels_use_axis_minus_two_for_inputs(rng):
    k = rng.normal(size=(3, 3, 4, 5))
    mapping = T.random_mapping(4, 6, seed=1)
    out = T.wider_in(k, mapping)
    assert out.shape == (3, 3, 6, 5)
    g = mapping.indices
    np.testing.assert_allclose(out[:, :, 5], k[:, :, g[5]] / mapping.counts[g[5]])


def test_expand_mapping_follows_flatten_layout():
    mapping = T.WidthMapping(np.array([0, 1, 0]), 2)
    flat = mapping.expand(3)
    assert flat.old_width == 6 and flat.new_width == 9
    np.testing.assert_array_equal(flat.indices, [0, 1, 0, 2, 3, 2, 4, 5, 4])
    fresh = T.padding_mapping(2, 3).expand(2)
    np.testing.assert_array_equal(fresh.indices, [0, 1, -1, 2, 3, -1])


def test_noise_changes_only_copies_and_is_seeded(rng):
    w = rng.normal(size=(4, 3))
    mapping = T.random_mapping(3, 6, seed=0)
    exact = T.wider_out(w, mapping)
    noisy = T.wider_out(w, mapping, noise=0.1, seed=3)
    np.testing.assert_array_equal(noisy[:, :3], exact[:, :3])
    assert not np.allclose(noisy[:, 3:], exact[:, 3:])
    diff = np.abs(noisy - exact).max()
    assert 0 < diff < 1.0 * np.std(w)
    np.testing.assert_array_equal(noisy, T.wider_out(w, mapping, noise=0.1, seed=3))


def test_random_fill_for_fresh_units(rng):
    w = rng.normal(size=(4, 3))
    mapping = T.padding_mapping(3, 5)
    out = T.wider_out(w, mapping, fill="random", seed=0)
    np.testing.assert_array_equal(out[:, :3], w)
    assert np.all(out[:, 3:] != 0)
    assert np.all(T.wider_out(w, mapping, fill=0.0)[:, 3:] == 0)
    with pytest.raises(ValueError, match="fill"):
        T.wider_out(w, mapping, fill="ones")


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="old_width=3"):
        T.wider_in(np.zeros((4, 2)), T.random_mapping(3, 4))


def test_identity_kernels():
    np.testing.assert_array_equal(T.identity_dense_kernel(3), np.eye(3))
    k = T.identity_conv_kernel((3, 5), 4)
    assert k.shape == (3, 5, 4, 4)
    np.testing.assert_array_equal(k[1, 2], np.eye(4))
    assert np.abs(k).sum() == 4
    with pytest.raises(ValueError, match="odd kernel sizes"):
        T.identity_conv_kernel((2, 3), 4)


def test_choose_mapping_follows_every_rule():
    # no rule: exactly the Net2WiderNet random mapping
    plain = T.choose_mapping(4, 7, seed=3)
    assert np.array_equal(plain.indices, T.random_mapping(4, 7, seed=3).indices)
    heads = T.MappingRule(block=3, reason="'att' has heads of 3")
    equal = T.MappingRule(uniform=True, reason="'ln' normalises over them")
    for seed in range(5):
        blocks = T.choose_mapping(6, 15, [heads], seed=seed)
        assert T.satisfies(blocks, heads) and blocks.indices[:6].tolist() == list(
            range(6)
        )
        both = T.choose_mapping(6, 12, [heads, equal], seed=seed)
        assert T.satisfies(both, heads) and T.satisfies(both, equal)
    assert not T.satisfies(
        T.WidthMapping(np.array([0, 1, 2, 0, 1, 2, 4, 5, 3]), 6), heads
    )
    assert not T.satisfies(T.random_mapping(6, 7, seed=0), equal)
    assert T.satisfies(T.padding_mapping(6, 7), equal)  # fresh units copy nothing
    with pytest.raises(ValueError, match="'att' has heads of 3.*multiple of 3"):
        T.choose_mapping(6, 8, [heads])
    with pytest.raises(ValueError, match="'ln' normalises.*multiple of 6"):
        T.choose_mapping(6, 9, [equal])
    with pytest.raises(ValueError, match="block >= 1"):
        T.MappingRule(block=0)


def test_grouped_rules_copy_within_each_group():
    norm = T.MappingRule(uniform=True, groups=2, reason="'gn' normalises groups")
    coarse = T.MappingRule(groups=4)
    for seed in range(3):
        mapping = T.choose_mapping(8, 16, [norm, coarse], seed=seed)
        assert T.satisfies(mapping, norm) and T.satisfies(mapping, coarse)
    loose = T.choose_mapping(8, 12, [coarse], seed=0)  # random within groups
    assert T.satisfies(loose, coarse) and loose.counts.min() >= 1
    crossing = T.WidthMapping(np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]), 8)
    assert not T.satisfies(crossing, T.MappingRule(groups=2))
    with pytest.raises(ValueError, match="'gn' normalises groups.*within each"):
        T.choose_mapping(8, 12, [norm])
    with pytest.raises(ValueError, match="groups >= 1"):
        T.MappingRule(groups=0)


def test_paired_noise_sums_to_zero_over_each_units_copies_on_any_axis():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4, 5, 6)).astype("float32")  # axis -3 has 4 units
    mapping = T.WidthMapping(np.array([0, 1, 2, 3, 1, 1, 3, -1]), old_width=4)
    exact = T.wider_in(w, mapping, axis=-3)
    noisy = T.wider_in(w, mapping, axis=-3, noise=0.5, paired=True, seed=1)
    for rows in ([1, 4, 5], [3, 6]):  # the copies of units 1 and 3
        np.testing.assert_allclose(
            noisy[:, rows].sum(1), exact[:, rows].sum(1), rtol=1e-5, atol=1e-6
        )
        assert np.all(noisy[:, rows] != exact[:, rows])
    for alone in (0, 2, 7):  # not copied, or fresh: untouched
        np.testing.assert_array_equal(noisy[:, alone], exact[:, alone])
