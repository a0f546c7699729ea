"""From an evaluated model to the model in service: the gate, registry versions and aliases, the
promotion lock, approval, the register/promote/reject stages."""
