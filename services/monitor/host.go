package monitor

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
)

type cpuTimes struct{ idle, total uint64 }

// readCPU reads the aggregate CPU times from /proc/stat.
func readCPU() (cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[0] != "cpu" {
			continue
		}
		var c cpuTimes
		for i, v := range fields[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return cpuTimes{}, err
			}
			c.total += n
			if i == 3 || i == 4 { // idle, iowait
				c.idle += n
			}
		}
		return c, nil
	}
	return cpuTimes{}, errors.New("no cpu line in /proc/stat")
}

// readMemUsage is 1 - MemAvailable/MemTotal from /proc/meminfo.
func readMemUsage() (float64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	var total, avail float64
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	if total == 0 {
		return 0, errors.New("no MemTotal in /proc/meminfo")
	}
	return 1 - avail/total, nil
}
