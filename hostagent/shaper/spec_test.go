package shaper

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"berth/schema"
)

func TestFromBandwidth(t *testing.T) {
	const host = 1_000_000 // kbit: 1 Gbit/s
	for _, tc := range []struct {
		name string
		bw   *schema.SetBandwidth
		want Spec
	}{
		{"none", nil, Spec{}},
		{"zeros", &schema.SetBandwidth{}, Spec{}},
		{
			"nova average only: KB/s ×8 = kbit/s",
			&schema.SetBandwidth{InboundAverageKBps: 1000, OutboundAverageKBps: 500},
			Spec{In: &Class{RateBits: 8_000_000, CeilBits: 8_000_000}, Out: &Class{RateBits: 4_000_000, CeilBits: 4_000_000}},
		},
		{
			"peak is the ceiling, burst in KB",
			&schema.SetBandwidth{InboundAverageKBps: 1000, InboundPeakKBps: 2000, InboundBurstKB: 64, OutboundAverageKBps: 100, OutboundPeakKBps: 300, OutboundBurstKB: 32},
			Spec{
				In:  &Class{RateBits: 8_000_000, CeilBits: 16_000_000, BurstBytes: 65536},
				Out: &Class{RateBits: 800_000, CeilBits: 2_400_000, BurstBytes: 32768},
			},
		},
		{
			"peak below average is ignored",
			&schema.SetBandwidth{InboundAverageKBps: 1000, InboundPeakKBps: 10},
			Spec{In: &Class{RateBits: 8_000_000, CeilBits: 8_000_000}},
		},
		{
			"guarantee is the rate, average the ceiling, priority",
			&schema.SetBandwidth{InboundAverageKBps: 2500, GuaranteeKbit: 5000, Priority: 3},
			Spec{In: &Class{RateBits: 5_000_000, CeilBits: 20_000_000, Prio: 3}},
		},
		{
			"guarantee alone borrows up to the host",
			&schema.SetBandwidth{GuaranteeKbit: 5000, Priority: 12},
			Spec{In: &Class{RateBits: 5_000_000, CeilBits: 1_000_000_000, Prio: 7}},
		},
		{
			"capped by the host",
			&schema.SetBandwidth{InboundAverageKBps: 1_000_000, GuaranteeKbit: 2_000_000},
			Spec{In: &Class{RateBits: 1_000_000_000, CeilBits: 1_000_000_000}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, FromBandwidth(tc.bw, host)); diff != "" {
				t.Errorf("FromBandwidth (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBurstAndQuantum(t *testing.T) {
	if got := burst(0, 8_000_000); got != 10_000 {
		t.Errorf("default burst at 8 Mbit/s = %d, want 10ms = 10000 bytes", got)
	}
	if got := burst(0, 100_000); got != 3028 {
		t.Errorf("default burst at 100 kbit/s = %d, want two frames", got)
	}
	if got := burst(4096, 8_000_000); got != 4096 {
		t.Errorf("explicit burst = %d", got)
	}
	if q := quantum(1_000_000_000); q != 60000 {
		t.Errorf("quantum at 1 Gbit/s = %d", q)
	}
	if q := quantum(100_000); q != 1600 {
		t.Errorf("quantum at 100 kbit/s = %d", q)
	}
}

func TestMACKeys(t *testing.T) {
	keys := macKeys([]byte{0xfa, 0x16, 0x3e, 0x01, 0x02, 0x03})
	if keys[0].Val != 0xfa16 || keys[0].Mask != 0xffff || keys[0].Off != -16 ||
		keys[1].Val != 0x3e010203 || keys[1].Mask != 0xffffffff || keys[1].Off != -12 {
		t.Errorf("macKeys = %+v", keys)
	}
}
