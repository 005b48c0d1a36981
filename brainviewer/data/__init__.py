"""Reading scans, masks and datasets: image readers, volumes (NIfTI, DICOM), dataset layouts,
patient splits, the phantom."""
