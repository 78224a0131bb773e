"""Fake of ``smacv2.env.starcraft2.maps.smac_maps``: the map parameters of the SMACv2 maps (and two
SMAC v1 maps), as the real registry has them. The real module also defines pysc2 map classes."""


def _gen(race, map_type):
    return {
        "n_agents": 10,
        "n_enemies": 10,
        "limit": 200,
        "a_race": race,
        "b_race": race,
        "unit_type_bits": 3,
        "map_type": map_type,
        "map_name": "32x32_flat",
    }


map_param_registry = {
    "10gen_terran": _gen("T", "terran_gen"),
    "10gen_zerg": _gen("Z", "zerg_gen"),
    "10gen_protoss": _gen("P", "protoss_gen"),
    "3m": {
        "n_agents": 3,
        "n_enemies": 3,
        "limit": 60,
        "a_race": "T",
        "b_race": "T",
        "unit_type_bits": 0,
        "map_type": "marines",
        "map_name": "3m",
    },
    "8m": {
        "n_agents": 8,
        "n_enemies": 8,
        "limit": 120,
        "a_race": "T",
        "b_race": "T",
        "unit_type_bits": 0,
        "map_type": "marines",
        "map_name": "8m",
    },
}


def get_smac_map_registry():
    return map_param_registry
