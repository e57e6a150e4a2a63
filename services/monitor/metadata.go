package monitor

import (
	monitorv1 "github.com/opsuite/opsuite/gen/opsuite/monitor/v1"
	"github.com/opsuite/opsuite/services/monitor/internal/ingest"
	"github.com/opsuite/opsuite/services/monitor/internal/tsstore"
)

func metadataOf(s ingest.Series) tsstore.Metadata {
	return tsstore.Metadata{Type: s.Type, Help: s.Help, Unit: s.Unit}
}

func metricTypeOf(t string) monitorv1.MetricType {
	switch t {
	case "counter":
		return monitorv1.MetricType_METRIC_TYPE_COUNTER
	case "gauge":
		return monitorv1.MetricType_METRIC_TYPE_GAUGE
	case "histogram":
		return monitorv1.MetricType_METRIC_TYPE_HISTOGRAM
	case "summary":
		return monitorv1.MetricType_METRIC_TYPE_SUMMARY
	}
	return monitorv1.MetricType_METRIC_TYPE_UNSPECIFIED
}
