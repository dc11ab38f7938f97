# Accelerator probe (scripts/accel.sh): reaching this line means the guest booted.
echo "dsu-vm: probe booted"
exit 0
